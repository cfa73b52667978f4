"""bounces: trust (verified, unverified, confirmed), who an unverified one names, and
the key that lets a consequence happen once

A bounce that arrives by mail acts only when a signed VERP token or Message-ID ties it to a
message we sent; the rest is kept as unverified evidence until staff confirm it. Rows
from before are marked verified where they were tied by a token, a Message-ID, our own
SMTP transaction or a provider webhook.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('bounce', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trust', sa.String(length=16), server_default='', nullable=False))
        batch_op.add_column(sa.Column('unverified_reason', sa.String(length=32), server_default='', nullable=False))
        batch_op.add_column(sa.Column('claimed_delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('claimed_subscriber_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('act_key', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('confirmed_by', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_bounce_claimed_subscriber_id'), ['claimed_subscriber_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_bounce_trust'), ['trust'], unique=False)
        batch_op.create_unique_constraint(batch_op.f('uq_bounce_act_key'), ['act_key'])
        batch_op.create_foreign_key(batch_op.f('fk_bounce_claimed_subscriber_id_subscriber'), 'subscriber', ['claimed_subscriber_id'], ['id'], ondelete='SET NULL')
        batch_op.create_foreign_key(batch_op.f('fk_bounce_claimed_delivery_id_delivery'), 'delivery', ['claimed_delivery_id'], ['id'], ondelete='SET NULL')
    op.execute(
        "UPDATE bounce SET trust = 'verified' WHERE attribution IN ('verp', 'message-id', "
        "'smtp') OR source NOT IN ('mx', 'imap', 'pop3', 'import')"
    )


def downgrade() -> None:
    with op.batch_alter_table('bounce', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_bounce_claimed_delivery_id_delivery'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_bounce_claimed_subscriber_id_subscriber'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('uq_bounce_act_key'), type_='unique')
        batch_op.drop_index(batch_op.f('ix_bounce_trust'))
        batch_op.drop_index(batch_op.f('ix_bounce_claimed_subscriber_id'))
        batch_op.drop_column('confirmed_at')
        batch_op.drop_column('confirmed_by')
        batch_op.drop_column('act_key')
        batch_op.drop_column('claimed_subscriber_id')
        batch_op.drop_column('claimed_delivery_id')
        batch_op.drop_column('unverified_reason')
        batch_op.drop_column('trust')
