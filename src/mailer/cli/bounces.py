"""``mailer bounces``: inspect, receive and import bounce mails."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Bounces and complaints.")
