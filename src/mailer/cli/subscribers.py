"""``mailer subscribers``: import, export, show (GDPR export), erase."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import func, select

from mailer.db import transaction
from mailer.subscribers import service
from mailer.subscribers.addresses import InvalidAddress
from mailer.subscribers.importer import import_rows, read_csv
from mailer.subscribers.models import Subscriber

app = typer.Typer(no_args_is_help=True, help="Subscribers and their consent.")
err = Console(stderr=True)


@app.command("import")
def import_(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV with an 'email' column"),
    source: str = typer.Option(None, help="Where their consent was given (default: the file name)"),
) -> None:
    """Import confirmed readers from an older system (consent source recorded)."""
    source = source or f"import:{path.name}"
    with path.open(newline="", encoding="utf-8-sig") as stream:
        total = max(0, sum(1 for _ in stream) - 1)
    with path.open(newline="", encoding="utf-8-sig") as stream, Progress(console=err) as bar:
        task = bar.add_task("importing", total=total)
        try:
            report = import_rows(read_csv(stream), source=source,
                                 progress=lambda n: bar.advance(task, n))
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    for line, problem in report.problems:
        err.print(f"line {line}: {problem}")
    typer.echo(f"imported {report.imported}, skipped {report.skipped}")


@app.command("export")
def export(
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
    status: str = typer.Option(None, help="only this status: pending, confirmed, unsubscribed"),
) -> None:
    """Print every subscriber (CSV or JSON lines) on standard output."""
    fields = ["email", "first_name", "last_name", "organisation", "country", "status",
              "source", "created_at", "confirmed_at", "unsubscribed_at"]
    writer = csv.writer(sys.stdout) if fmt == "csv" else None
    if writer:
        writer.writerow(fields)
    with transaction() as session:
        query = select(Subscriber).order_by(Subscriber.id)
        if status:
            query = query.where(Subscriber.status == status)
        for sub in session.scalars(query.execution_options(yield_per=1000)):
            row = {f: getattr(sub, f) for f in fields}
            row = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
            if writer:
                writer.writerow([row[f] or "" for f in fields])
            else:
                sys.stdout.write(json.dumps(row) + "\n")


@app.command("show")
def show(email: str) -> None:
    """The subscriber and the whole consent history as JSON (the GDPR export)."""
    with transaction() as session:
        subscriber = _find(session, email)
        typer.echo(json.dumps(service.export(session, subscriber), indent=2, ensure_ascii=False))


@app.command("erase")
def erase(email: str, yes: bool = typer.Option(False, "--yes", help="do not ask")) -> None:
    """Delete a person; keep only a hashed suppression entry so nothing mails them again."""
    if not yes:
        typer.confirm(f"Erase {email} and its consent history for good?", abort=True)
    with transaction() as session:
        subscriber = _find(session, email)
        hash_ = service.erase(session, subscriber, by="cli")
    typer.echo(f"erased; suppression hash {hash_}")


@app.command("count")
def count() -> None:
    """Subscribers by status."""
    with transaction() as session:
        for status, n in session.execute(
            select(Subscriber.status, func.count()).group_by(Subscriber.status)
        ):
            typer.echo(f"{status}: {n}")


def _find(session, email: str) -> Subscriber:  # type: ignore[no-untyped-def]
    try:
        subscriber = service.find(session, email)
    except InvalidAddress as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if subscriber is None:
        err.print(f"[red]no subscriber with the address {email}[/red]")
        raise typer.Exit(1)
    return subscriber
