"""Join the three branches that grew from 0001 into one line of history.

0002_bounces, 0002_digest and 0003_staff each revised 0001, so Alembic saw three heads and
``mailer db revision`` refused to run. From here on every revision has one parent, and
``tests/test_migrations.py`` fails if a second head appears.

Revision ID: 0004
Revises: 0002_bounces, 0002_digest, 0003_staff
"""

from __future__ import annotations

revision = "0004"
down_revision = ("0002_bounces", "0002_digest", "0003_staff")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
