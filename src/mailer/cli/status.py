"""``mailer status``: the queues, the workers and every edition being sent."""

from __future__ import annotations

import typer


def status(as_json: bool = typer.Option(False, "--json", help="one JSON snapshot")) -> None:
    """The queues, the workers, and every edition being sent."""
    typer.echo("mailer status: not written yet")
