"""edition links: an edition's links and how often each was followed (no reader in it)

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "edition_link",
        sa.Column("edition_id", sa.Integer(),
                  sa.ForeignKey("edition.id", name="fk_edition_link_edition_id_edition",
                                ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("label", sa.String(300), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("head_requests", sa.Integer(), nullable=False),
        sa.Column("scanner_clicks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("edition_id", "position", name="pk_edition_link"),
    )
    op.create_table(
        "click_flush",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("flushed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_click_flush"),
    )
    op.create_index("ix_click_flush_flushed_at", "click_flush", ["flushed_at"])


def downgrade() -> None:
    op.drop_index("ix_click_flush_flushed_at", table_name="click_flush")
    op.drop_table("click_flush")
    op.drop_table("edition_link")
