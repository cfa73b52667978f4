"""staff: the runs of the bi-monthly draft schedule

One row per run of the beat task that drafts the next edition, unique on the run's date,
so a task delivered twice drafts one edition.

Revision ID: 0003_staff
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0003_staff'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'scheduled_draft',
        sa.Column('slot', sa.String(length=32), nullable=False),
        sa.Column('ran_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('edition_id', sa.Integer(), nullable=True),
        sa.Column('outcome', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['edition_id'], ['edition.id'],
                                name=op.f('fk_scheduled_draft_edition_id_edition'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('slot', name=op.f('pk_scheduled_draft')),
    )


def downgrade() -> None:
    op.drop_table('scheduled_draft')
