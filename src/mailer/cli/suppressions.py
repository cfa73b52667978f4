"""``mailer suppressions``: the addresses that are never mailed again, and why.

The list holds address hashes (so an erased person stays on it without their address);
``list`` shows the address where a subscriber still has it. Every change writes a consent
event on the subscriber it concerns.
"""

from __future__ import annotations

import csv
import json
import re
import sys

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from mailer.cli.actor import cli_actor
from mailer.cli.clock import format_time
from mailer.db import transaction
from mailer.subscribers.addresses import InvalidAddress, key_hash
from mailer.subscribers.models import Suppression, SuppressionReason
from mailer.suppression import queries as suppression_queries
from mailer.suppression.service import ErasureKept, suppress, unsuppress

app = typer.Typer(no_args_is_help=True,
                  help="The suppression list: addresses never mailed again, with the evidence.")
err = Console(stderr=True)
_HASH = re.compile(r"^[0-9a-f]{64}$")
_REASONS = [r.value for r in SuppressionReason]


@app.command("list")
def list_(
    reason: str = typer.Option(None, help=f"only this reason: {', '.join(_REASONS)}"),
    email: str = typer.Option(None, help="only this address"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json (one per line)"),
) -> None:
    """Every suppressed address with its reason, since when, by whom and the evidence."""
    if fmt not in ("table", "csv", "json"):
        _fail("--format must be table, csv or json")
    with transaction() as session:
        found = suppression_queries.suppressions(session, reason=reason or None,
                                                 address_hash=_hash_of(email) if email else None)
        # The table is for people (the association's time); JSON and CSV keep ISO 8601.
        rows = [{
            "email": address or "",
            "address_hash": s.address_hash,
            "reason": s.reason,
            "since": s.created_at.isoformat(timespec="seconds"),
            "by": s.created_by,
            "evidence": s.evidence,
            "_shown_since": format_time(s.created_at),
        } for s, address, _ in found]
    shown = [row.pop("_shown_since") for row in rows]
    if fmt == "json":
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else
                                ["email", "address_hash", "reason", "since", "by", "evidence"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table("address", "reason", "since", "by", "evidence")
        for row, since in zip(rows, shown, strict=True):
            table.add_row(row["email"] or f"(erased) {row['address_hash'][:16]}…", row["reason"],
                          since, row["by"], row["evidence"])
        Console(width=200).print(table)
        typer.echo(f"{len(rows)} suppressed")


@app.command("add")
def add(
    email: str = typer.Argument(..., help="the address to suppress"),
    reason: str = typer.Option(SuppressionReason.manual.value,
                               help=f"one of {', '.join(_REASONS)}"),
    evidence: str = typer.Option("", help="why (a ticket, a mail from the reader…)"),
) -> None:
    """Put an address on the suppression list (it need not be a subscriber)."""
    if reason not in _REASONS:
        _fail(f"--reason must be one of {', '.join(_REASONS)}")
    hash_ = _hash_of(email)
    with transaction() as session:
        added = suppress(session, hash_, reason=reason,
                         evidence=evidence or "added with mailer suppressions add",
                         by=_operator())
        existing = _suppression(session, hash_)
    if added:
        typer.echo(f"suppressed {email} ({reason})")
    else:
        assert existing is not None
        typer.echo(f"{email} was already suppressed ({existing.reason} since "
                   f"{format_time(existing.created_at)})")


@app.command("remove")
def remove(
    address: str = typer.Argument(..., help="the address, or its hash as `list` shows it"),
    force: bool = typer.Option(False, "--force", help="also lift an erasure's suppression"),
) -> None:
    """Take an address off the suppression list.

    The reader gets newsletters again only if they are (or become) a confirmed subscriber.
    """
    hash_ = address.lower() if _HASH.match(address.lower()) else _hash_of(address)
    with transaction() as session:
        existing = _suppression(session, hash_)
        if existing is None:
            err.print(f"[red]{address} is not on the suppression list[/red]")
            raise typer.Exit(1)
        try:
            unsuppress(session, hash_, by=_operator(), force=force)
        except ErasureKept:
            err.print(f"[red]{address} was erased on request; lifting the suppression lets an "
                      "import mail them again. Add --force if that is really meant.[/red]")
            raise typer.Exit(1) from None
    typer.echo(f"removed {address} from the suppression list (was: {existing.reason})")


def _hash_of(email: str) -> str:
    try:
        return key_hash(email)
    except InvalidAddress as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


def _suppression(session: Session, hash_: str) -> Suppression | None:
    return suppression_queries.suppression_of(session, hash_)


def _operator() -> str:
    return cli_actor()


def _fail(message: str) -> None:
    err.print(f"[red]{message}[/red]")
    raise typer.Exit(2)
