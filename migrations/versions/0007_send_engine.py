"""send engine: claims name their holder; an index that keeps per-batch work constant

- ``sender_process``: every worker process that sends, with its heartbeat; a claim
  (``delivery.holder_id``) names one, so the claims of a process that is gone are queued
  again at once instead of when a five-minute lease runs out.
- ``ix_delivery_edition_state`` (edition, state) becomes (edition, state, id): a batch
  claims its next rows, and "is anything of this edition still open" is answered, by
  reading only the index entries needed, however long the list.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sender_process",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("place", sa.String(length=120), nullable=False),
        sa.Column("process_start", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=True),
        sa.Column("first_id", sa.BigInteger(), nullable=True),
        sa.Column("last_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sender_process")),
    )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("holder_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_delivery_edition_state_id", ["edition_id", "state", "id"],
                              unique=False)
        batch_op.drop_index("ix_delivery_edition_state")


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_edition_state", ["edition_id", "state"], unique=False)
        batch_op.drop_index("ix_delivery_edition_state_id")
        batch_op.drop_column("holder_id")
    op.drop_table("sender_process")
