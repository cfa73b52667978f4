"""insight: the edition an unsubscribe came from, indexes for the list over time, and a
sent edition's delivery figures and each past week's list figures, counted once

Revision ID: 0013
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consent_event") as batch:
        batch.add_column(sa.Column("edition_id", sa.Integer(), nullable=True))
    op.create_index("ix_consent_event_kind_at", "consent_event", ["kind", "at"])
    op.create_index("ix_consent_event_edition_kind", "consent_event", ["edition_id", "kind"])
    op.create_table(
        "edition_summary",
        sa.Column("edition_id", sa.Integer(),
                  sa.ForeignKey("edition.id", name="fk_edition_summary_edition_id_edition",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("edition_id", name="pk_edition_summary"),
    )
    op.create_table(
        "list_week",
        sa.Column("starts", sa.String(10), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("starts", name="pk_list_week"),
    )


def downgrade() -> None:
    op.drop_table("list_week")
    op.drop_table("edition_summary")
    op.drop_index("ix_consent_event_edition_kind", table_name="consent_event")
    op.drop_index("ix_consent_event_kind_at", table_name="consent_event")
    with op.batch_alter_table("consent_event") as batch:
        batch.drop_column("edition_id")
