"""``mailer db``: the schema."""

from __future__ import annotations

import typer

from mailer import migrate

app = typer.Typer(no_args_is_help=True, help="Database schema migrations (Alembic).")


@app.command("upgrade")
def upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply the migrations (SQLite or PostgreSQL, from MAILER_DATABASE_URL)."""
    migrate.upgrade(revision=revision)
    typer.echo("database is up to date")


@app.command("downgrade")
def downgrade(revision: str = typer.Argument(...)) -> None:
    """Undo migrations down to REVISION ('base' empties the database)."""
    migrate.downgrade(revision=revision)


@app.command("current")
def current() -> None:
    """Show the revision the database is at."""
    migrate.current()
