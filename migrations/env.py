"""Alembic environment: the URL comes from mailer's settings (or the caller's config)."""

from alembic import context
from sqlalchemy import pool

from mailer.config import get_settings
from mailer.db import get_engine
from mailer.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or get_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or get_settings().database_url
    engine = get_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,  # SQLite cannot ALTER most things: copy-and-move instead
            compare_type=True,
            # mailer.migrate.upgrade lists what it applied ("applied 0001 … 0004").
            on_version_apply=config.attributes.get("on_version_apply", ()),
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


_ = pool
if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
