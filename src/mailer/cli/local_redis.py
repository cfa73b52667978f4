"""``mailer local-redis``: the Redis of its own that ``make run`` starts when none answers."""

from __future__ import annotations

import typer

from mailer import local_redis
from mailer.config import get_settings

app = typer.Typer(no_args_is_help=True, help=(
    "A Redis of its own for development, under var/redis/ (make run starts and stops it)."))


@app.command("start")
def start() -> None:
    """Start a Redis at MAILER_REDIS_URL unless one answers there already; say which."""
    try:
        typer.echo(local_redis.start(get_settings()))
    except local_redis.LocalRedisError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@app.command("stop")
def stop() -> None:
    """Stop the Redis that `start` started (nothing else)."""
    said = local_redis.stop()
    if said:
        typer.echo(said)
