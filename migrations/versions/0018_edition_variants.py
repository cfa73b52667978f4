"""edition variants: an edition composed once per distinct set of its articles its readers'
topics select, and the variant each delivery gets

``edition_variant`` holds each variant's snapshot (subject, inlined HTML and text with the
placeholders of its key), the article ids it holds and how many readers it was frozen for.
``delivery.variant`` names the variant (NULL: the whole edition, as every delivery before).
The column is added without rebuilding the delivery table (SQLite: a plain ``ADD COLUMN``;
the table's triggers stay).

Revision ID: 0018
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "edition_variant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("article_ids", sa.JSON(), nullable=False),
        sa.Column("subject_snapshot", sa.String(300), nullable=False),
        sa.Column("html_snapshot", sa.Text(), nullable=False),
        sa.Column("text_snapshot", sa.Text(), nullable=False),
        sa.Column("placeholder_key", sa.String(32), nullable=False),
        sa.Column("readers", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["edition.id"],
                                name=op.f("fk_edition_variant_edition_id_edition"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edition_variant")),
        sa.UniqueConstraint("edition_id", "number", name=op.f("uq_edition_variant_edition_id")),
    )
    op.add_column("delivery", sa.Column("variant", sa.Integer(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE delivery DROP COLUMN variant")
    else:
        op.drop_column("delivery", "variant")
    op.drop_table("edition_variant")
