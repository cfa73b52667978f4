"""Apply the Alembic migrations from Python (``mailer db upgrade``, ``make run``, tests) to
the database at ``url`` (the caller's ``Settings.database_url``)."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mailer.db import get_engine
from mailer.paths import migrations_dir


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation would choke on a '%' in a password.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> list[str]:
    """Apply the migrations up to ``revision``; the revisions applied, oldest first."""
    cfg = alembic_config(url)
    applied: list[str] = []

    def record(*, step: Any, **_: Any) -> None:
        if step.is_upgrade and not step.is_stamp:
            applied.extend(step.up_revision_ids)

    cfg.attributes["on_version_apply"] = [record]
    command.upgrade(cfg, revision)
    return applied


def schema_state(url: str) -> tuple[tuple[str, ...], list[str]]:
    """(the revisions the database is at, the revisions an upgrade would apply, oldest first).

    Raises alembic's CommandError when the database is at a revision this code does not know.
    """
    script = ScriptDirectory.from_config(alembic_config(url))
    with get_engine(url).connect() as conn:
        current = MigrationContext.configure(conn).get_current_heads()
    pending = [rev.revision for rev in script.iterate_revisions("heads", current or "base")
               if rev.revision not in current]
    return current, list(reversed(pending))


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> None:
    command.current(alembic_config(url), verbose=False)


def revision(message: str, url: str) -> None:
    command.revision(alembic_config(url), message=message, autogenerate=True)
