"""digest: the size of an article's image

The digest shows a feed image only when it knows its size: an <img> without width and
height (or with the wrong ones) is drawn distorted or jumps around while loading.

Revision ID: 0002_digest
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002_digest'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('article', schema=None) as batch_op:
        batch_op.add_column(sa.Column('image_width', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('image_height', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('article', schema=None) as batch_op:
        batch_op.drop_column('image_height')
        batch_op.drop_column('image_width')
