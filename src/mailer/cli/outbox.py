"""``mailer outbox``: the development SMTP catcher."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mailer.config import get_settings

app = typer.Typer(no_args_is_help=True, help="The local SMTP catcher for development.")


@app.command("serve")
def serve(host: str = typer.Option(None, help="default: MAILER_SMTP_URL's host, if loopback"),
          port: int = typer.Option(None, help="default: MAILER_SMTP_URL's port"),
          outbox: Path = typer.Option(None, help="Folder for .eml files (default var/outbox)"),
          ) -> None:
    """Accept every message on HOST:PORT and store it as an .eml file.

    By default it listens where MAILER_SMTP_URL points (127.0.0.1:1025 unless told),
    so that the web app and the workers send to it."""
    from mailer.emails.catcher import serve as start

    settings = get_settings()
    target = settings.smtp.target
    host = host or (target.host if target.is_loopback else "127.0.0.1")
    port = port or (target.port if target.is_loopback else 1025)
    folder = outbox or settings.outbox_dir
    controller = start(folder, host, port)
    typer.echo(f"SMTP catcher on {host}:{port}, storing messages in {folder}/")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
