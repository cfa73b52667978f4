"""``mailer check``: can this configuration run? The database and Redis, one line each.

``make run`` calls it before anything else, so a database or Redis that is not there is
said in one line instead of a traceback from the first command that needed it.
"""

from __future__ import annotations

import typer
from alembic.util import CommandError

from mailer import migrate
from mailer.config import get_settings
from mailer.db import database_problem, masked_url
from mailer.redis import masked_url as masked_redis_url
from mailer.redis import redis_reachable


def _schema_note() -> str:
    current, pending = migrate.schema_state(get_settings().database_url)
    if not pending:
        return f"schema at {', '.join(current)}, the latest"
    applies = f"`mailer db upgrade` applies {_revisions(pending)}"
    return f"no schema yet: {applies}" if not current else \
        f"schema at {', '.join(current)}: {applies}"


def _revisions(revisions: list[str]) -> str:
    return ", ".join(revisions) if len(revisions) <= 3 else f"{revisions[0]} … {revisions[-1]}"


def check() -> None:
    """Check that the database and Redis answer (make run calls this first).

    One line per part; exits with 1 when any part is not usable.
    """
    settings = get_settings()
    fine: list[str] = []
    problems: list[str] = []

    problem = database_problem()
    if problem:
        problems.append(f"Database: {problem}")
    else:
        try:
            fine.append(f"Database: ok, {masked_url(settings.database_url)} ({_schema_note()})")
        except CommandError as exc:  # a revision this code does not know: a newer release?
            problems.append(f"Database: {masked_url(settings.database_url)} is at a revision "
                            f"this version of mailer does not know ({exc}).")

    problem = redis_reachable()
    if problem:
        problems.append(f"Redis: {problem}")
    else:
        fine.append(f"Redis: ok, {masked_redis_url(settings.redis_url)}")

    for line in fine:
        typer.echo(line)
    for line in problems:
        typer.echo(line, err=True)
    raise typer.Exit(1 if problems else 0)
