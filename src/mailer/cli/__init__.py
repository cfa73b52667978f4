"""The ``mailer`` command: one Typer sub-command per domain."""

from __future__ import annotations

import typer

from mailer.cli import (
    articles,
    bounce_intake,
    db,
    editions,
    local_redis,
    outbox,
    sending,  # noqa: F401 - registers its commands on the editions group
    subscribers,
    suppressions,
)

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="mailer: a self-hosted newsletter sender.")
app.add_typer(db.app, name="db")
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(outbox.app, name="outbox")
app.add_typer(local_redis.app, name="local-redis")
app.add_typer(articles.app, name="articles")
app.add_typer(editions.app, name="editions")  # with the send commands of cli/sending.py
# The bounces group of mailer.cli.bounces, with the commands bounce_intake adds to it.
app.add_typer(bounce_intake.app, name="bounces")
app.add_typer(suppressions.app, name="suppressions")


def _staff_and_ops() -> None:
    from mailer.cli import staff, status

    app.add_typer(staff.app, name="staff")
    app.command("status")(status.status)


_staff_and_ops()


@app.command("check")
def check() -> None:
    """Check that the database and Redis answer (make run calls this first)."""
    from mailer.cli.check import check as run_check

    run_check()


def main() -> None:
    from mailer.logging import setup_logging

    setup_logging()
    app()
