"""api tokens: what other systems present to /api/v1

``api_token``: a name (unique, kept after revocation so the audit log stays unambiguous),
the SHA-256 of the token (the token itself is never stored), its first characters to tell
tokens apart, its scopes, its requests per minute, who made it and when, an optional expiry, the last use and the
revocation.

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'api_token',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('hint', sa.String(length=16), nullable=False),
        sa.Column('scopes', sa.JSON(), nullable=False),
        sa.Column('rate_limit_per_minute', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=320), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
        sa.UniqueConstraint('name', name=op.f('uq_api_token_name')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_api_token_token_hash')),
    )


def downgrade() -> None:
    op.drop_table('api_token')
