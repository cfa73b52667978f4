"""``mailer tokens``: the API tokens other systems present to /api/v1.

``create`` prints the token once (only its SHA-256 is kept); ``list`` shows each token's
name, scopes, expiry, last use and whether it is revoked; ``revoke`` stops one at once.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from mailer.api_tokens import service
from mailer.cli.actor import cli_actor
from mailer.cli.clock import format_time
from mailer.db import transaction

app = typer.Typer(no_args_is_help=True, help="API tokens for /api/v1 (shown once, stored hashed).")
err = Console(stderr=True)


def _fail(message: str) -> None:
    err.print(message, style="red", markup=False, highlight=False)
    raise typer.Exit(1)


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="who holds it, e.g. website-form or crm"),
    scope: list[str] = typer.Option(..., "--scope",
                                    help=f"repeat for each: {', '.join(service.SCOPES)}"),
    expires_days: int = typer.Option(None, "--expires-days", help="valid for this many days"),
    rate_limit: int = typer.Option(service.DEFAULT_RATE_LIMIT, "--rate-limit",
                                   help="requests a minute (429 beyond)"),
) -> None:
    """Make a token and print it once: store it in the other system now."""
    try:
        with transaction() as session:
            token, value = service.create(session, name=name, scopes=scope, by=cli_actor(),
                                          expires_days=expires_days,
                                          rate_limit_per_minute=rate_limit)
            expires = format_time(token.expires_at) if token.expires_at else "never"
            scopes = ", ".join(token.scopes)
    except service.TokenError as exc:
        _fail(str(exc))
    print(value)
    err.print(f"Token {name} ({scopes}; expires {expires}). It is shown only this once.",
              markup=False, highlight=False)


@app.command("list")
def list_() -> None:
    """Every token: name, scopes, expiry, last use, revoked (never the token itself)."""
    table = Table("name", "token", "scopes", "per minute", "created", "expires", "last used",
                  "revoked")
    with transaction() as session:
        for t in service.all_tokens(session):
            table.add_row(t.name, f"{t.hint}…", ", ".join(t.scopes), str(t.rate_limit_per_minute),
                          f"{format_time(t.created_at)} by {t.created_by}",
                          format_time(t.expires_at) if t.expires_at else "never",
                          format_time(t.last_used_at) if t.last_used_at else "never",
                          format_time(t.revoked_at) if t.revoked_at else "")
    Console().print(table)


@app.command("revoke")
def revoke(name: str) -> None:
    """Revoke the token NAME: it is refused from the next request on."""
    try:
        with transaction() as session:
            service.revoke(session, name, by=cli_actor())
    except service.TokenError as exc:
        _fail(str(exc))
    print(f"Token {name} is revoked.")
