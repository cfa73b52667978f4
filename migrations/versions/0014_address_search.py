"""address search: a trigram index on the subscriber's address key (PostgreSQL), so a search
for a part of an address reads the few rows that hold it instead of the whole list

Revision ID: 0014
Revises: 0013
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

INDEX = "ix_subscriber_email_key_trgm"
log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite has no trigram index; its search reads the list, as before
    try:
        with bind.begin_nested():  # a role that may not create the extension: no index
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("pg_trgm could not be created (%s): the subscriber search works without "
                    "its index, reading the whole list. A superuser can add it: CREATE "
                    "EXTENSION pg_trgm; CREATE INDEX %s ON subscriber USING gin "
                    "(email_key gin_trgm_ops);", str(exc).splitlines()[0], INDEX)
        return
    op.create_index(INDEX, "subscriber", ["email_key"], postgresql_using="gin",
                    postgresql_ops={"email_key": "gin_trgm_ops"})


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
