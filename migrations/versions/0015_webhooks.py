"""webhooks: outgoing webhook endpoints, the outbox of events, a delivery per event and
endpoint, and the log of every attempt

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.Column("failing_since", WHEN, nullable=True),
        sa.Column("last_success_at", WHEN, nullable=True),
        sa.Column("disabled_at", WHEN, nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoint"),
    )
    op.create_table(
        "webhook_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_message"),
        sa.UniqueConstraint("message_id", name="uq_webhook_message_message_id"),
    )
    op.create_index("ix_webhook_message_subscriber_id", "webhook_message", ["subscriber_id"])
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(),
                  sa.ForeignKey("webhook_message.id",
                                name="fk_webhook_delivery_event_id_webhook_message",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("endpoint_id", sa.Integer(),
                  sa.ForeignKey("webhook_endpoint.id",
                                name="fk_webhook_delivery_endpoint_id_webhook_endpoint",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", WHEN, nullable=False),
        sa.Column("queued_at", WHEN, nullable=True),
        sa.Column("claim", sa.String(32), nullable=True),
        sa.Column("claimed_until", WHEN, nullable=True),
        sa.Column("retry_from", WHEN, nullable=False),
        sa.Column("delivered_at", WHEN, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_delivery"),
    )
    op.create_index("ix_webhook_delivery_state_next", "webhook_delivery",
                    ["state", "next_attempt_at"])
    op.create_index("ix_webhook_delivery_endpoint_id", "webhook_delivery", ["endpoint_id", "id"])
    op.create_table(
        "webhook_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(),
                  sa.ForeignKey("webhook_delivery.id",
                                name="fk_webhook_attempt_delivery_id_webhook_delivery",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("endpoint_id", sa.Integer(),
                  sa.ForeignKey("webhook_endpoint.id",
                                name="fk_webhook_attempt_endpoint_id_webhook_endpoint",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempt"),
    )
    op.create_index("ix_webhook_attempt_endpoint_id", "webhook_attempt", ["endpoint_id", "id"])


def downgrade() -> None:
    op.drop_table("webhook_attempt")
    op.drop_table("webhook_delivery")
    op.drop_table("webhook_message")
    op.drop_table("webhook_endpoint")
