"""edition deferrals: how many deliveries of an edition each receiving domain deferred, per
minute

``edition_deferral`` is a count, like ``edition_link``'s clicks: the edition, the minute
(UTC) and the domain, and how many deliveries were answered with a temporary refusal then.
It names no reader. A new table only: nothing else is touched.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "edition_deferral",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("deferrals", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["edition.id"],
                                name=op.f("fk_edition_deferral_edition_id_edition"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("edition_id", "minute", "domain",
                                name=op.f("pk_edition_deferral")),
    )


def downgrade() -> None:
    op.drop_table("edition_deferral")
