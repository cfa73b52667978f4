"""``mailer db``: the schema."""

from __future__ import annotations

import typer

from mailer import migrate
from mailer.config import get_settings
from mailer.db import database_problem, masked_url

app = typer.Typer(no_args_is_help=True, help="Database schema migrations (Alembic).")


@app.command("upgrade")
def upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply the migrations (SQLite or PostgreSQL, from MAILER_DATABASE_URL); says which."""
    problem = database_problem()
    if problem:  # one line, not the driver's traceback
        typer.echo(f"Database: {problem}", err=True)
        raise typer.Exit(1)
    url = get_settings().database_url
    applied = migrate.upgrade(url, revision=revision)
    where = masked_url(url)
    if applied:
        typer.echo(f"applied {', '.join(applied)} to {where}")
    else:
        current, _ = migrate.schema_state(url)
        at = ", ".join(current) or "no revision"
        typer.echo(f"already up to date: {where} is at {at}" if revision in ("head", "heads")
                   else f"nothing to apply up to {revision}: {where} is at {at}")


@app.command("downgrade")
def downgrade(revision: str = typer.Argument(...)) -> None:
    """Undo migrations down to REVISION ('base' empties the database)."""
    migrate.downgrade(get_settings().database_url, revision=revision)


@app.command("current")
def current() -> None:
    """Show the revision the database is at."""
    migrate.current(get_settings().database_url)
