"""``mailer outbox``: the development SMTP catcher."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mailer.config import get_settings

app = typer.Typer(no_args_is_help=True, help="The local SMTP catcher for development.")


@app.command("serve")
def serve(host: str = "127.0.0.1", port: int = 1025,
          outbox: Path = typer.Option(None, help="Folder for .eml files (default var/outbox)"),
          ) -> None:
    """Accept every message on HOST:PORT and store it as an .eml file."""
    from mailer.emails.catcher import serve as start

    folder = outbox or get_settings().outbox_dir
    controller = start(folder, host, port)
    typer.echo(f"SMTP catcher on {host}:{port}, storing messages in {folder}/")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
