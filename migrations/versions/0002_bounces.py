"""bounces: the inbound spool of the bounce server

A message the bounce server (``mailer bounces serve``) accepted is stored here before the
server answers 250, and deleted once the intake has recorded it: nothing accepted is lost
to a crash, a Redis restart or a lost task.

Revision ID: 0002_bounces
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002_bounces'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'inbound_message',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('envelope_from', sa.String(length=320), nullable=False),
        sa.Column('envelope_to', sa.JSON(), nullable=False),
        sa.Column('raw', sa.LargeBinary(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_message')),
    )
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_message_received_at'), ['received_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbound_message_received_at'))
    op.drop_table('inbound_message')
