"""``mailer bounces serve`` and ``mailer bounces import``: the ways bounce mails come in.

Both feed the one intake (:mod:`mailer.bounces.intake`); the commands register on the
``mailer bounces`` group of :mod:`mailer.cli.bounces`. Heavy imports happen inside the
commands, so ``mailer --help`` stays fast.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from mailer.cli.bounces import app


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for the MX)"),
    port: int = typer.Option(2525, help="Port to listen on (25 for the MX)"),
) -> None:
    """Run the inbound SMTP server for the bounce domain until Ctrl-C or SIGTERM.

    It takes mail only for MAILER_BOUNCE_DOMAIN, refuses anything over
    MAILER_BOUNCE_MAX_BYTES with 552, and answers 250 only once the message is stored;
    a worker (default queue) then parses it and acts.
    """
    from mailer.bounces.server import start
    from mailer.config import get_settings

    settings = get_settings()
    controller = start(host, port, settings.bounces, settings.identity.bounce_domain)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    domain = settings.identity.bounce_domain
    typer.echo(f"bounce server for {domain} listening on {host}:{port}")
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


@app.command("import")
def import_(
    path: Path = typer.Argument(..., exists=True,
                                help="An .eml file, an mbox file or a Maildir folder"),
) -> None:
    """Take in the bounce mails of an .eml file, an mbox or a Maildir.

    Each is parsed, attributed and acted on once: importing the same mail again records
    nothing.
    """
    from mailer.bounces.intake import receive
    from mailer.bounces.parse import OurAddresses, iter_messages
    from mailer.config import get_settings
    from mailer.db import transaction

    settings = get_settings()
    cap = settings.bounces.bounce_max_bytes
    ours = OurAddresses.of(settings.identity)

    totals = {"messages": 0, "recorded": 0, "repeats": 0, "refused": 0}
    try:
        for name, raw in iter_messages(path, limit=cap):
            with transaction() as session:
                result = receive(session, raw=raw, source="import", bounces=settings.bounces,
                                 ours=ours, keys=settings.all_secrets)
            typer.echo(f"{name}: {result.summary}")
            totals["messages"] += 1
            totals["recorded"] += len(result.recorded)
            totals["repeats"] += result.repeats
            totals["refused"] += bool(result.refused)
    except (OSError, ValueError) as exc:
        typer.secho(f"cannot read {path}: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{totals['messages']} messages: {totals['recorded']} bounces recorded, "
               f"{totals['repeats']} already known, {totals['refused']} refused")
