"""``mailer subscribers``: import, export, show (GDPR export), erase."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import privacy
from mailer.cli.actor import cli_actor
from mailer.config import get_settings
from mailer.db import transaction
from mailer.lists.models import MailingList, Subscription, SubscriptionStatus
from mailer.lists.service import by_slug, default_list
from mailer.subscribers.addresses import InvalidAddress
from mailer.subscribers.importer import import_rows, read_csv
from mailer.subscribers.models import Subscriber
from mailer.subscribers.records import find

app = typer.Typer(no_args_is_help=True, help="Subscribers and their consent.")
err = Console(stderr=True, soft_wrap=True)


@app.command("import")
def import_(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                help="UTF-8 CSV with a header row and at least an 'email' "
                                     "column; also first_name, last_name, organisation, "
                                     "country, consented_at"),
    source: str = typer.Option(None, help="Where their consent was given "
                                          "(default: import:<file name>)"),
    list_slug: str = typer.Option(None, "--list", help="the list they join (default: the "
                                                        "first list)"),
) -> None:
    """Import confirmed readers from an older system (consent source recorded).

    Bad rows are reported with their line numbers and skipped; good rows are kept.
    Addresses on the suppression list (erased, bounced) and people already on the list
    are left alone; a person on another list joins this one.
    """
    source = source or f"import:{path.name}"
    list_id = _list_of(list_slug).id
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            total = sum(1 for _ in read_csv(stream))
    except UnicodeDecodeError as exc:
        err.print(f"{path} is not UTF-8 text (byte {exc.start}): save it as “CSV UTF-8” "
                  "and try again. Nothing was imported.", style="red", markup=False)
        raise typer.Exit(2) from None
    except ValueError as exc:
        err.print(f"{exc}. Nothing was imported.", style="red", markup=False)
        raise typer.Exit(2) from None
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with path.open(newline="", encoding="utf-8-sig") as stream, \
            Progress(*columns, console=err) as bar:
        task = bar.add_task("importing", total=total)
        report = import_rows(read_csv(stream), source=source, by=cli_actor(), name=path.name,
                             check_deliverability=get_settings().signup.check_deliverability,
                             progress=lambda n: bar.advance(task, n), list_id=list_id)
    for line, problem in report.problems:
        err.print(f"line {line}: {problem}", markup=False, highlight=False)
    typer.echo(f"imported {report.imported}, skipped {report.skipped}")


class Format(StrEnum):
    csv = "csv"
    json = "json"


EXPORT_FIELDS = ["email", "first_name", "last_name", "organisation", "country", "status",
                 "source", "created_at", "confirmed_at", "unsubscribed_at"]


@app.command("export")
def export(
    fmt: Format = typer.Option(Format.csv, "--format", help="csv, or json (one array)"),
    status: SubscriptionStatus = typer.Option(None, help="only subscribers in this status"),
    list_slug: str = typer.Option(None, "--list", help="the list (default: the first list)"),
) -> None:
    """Print every subscriber of a list on standard output, as CSV or as a JSON array (the
    status and its times are the list's)."""
    lst = _list_of(list_slug)
    with transaction() as session:
        query = (select(Subscriber, Subscription)
                 .join(Subscription, Subscription.subscriber_id == Subscriber.id)
                 .where(Subscription.list_id == lst.id).order_by(Subscriber.id))
        if status:
            query = query.where(Subscription.status == status)
        rows = (_export_row(s, held) for s, held in
                session.execute(query.execution_options(yield_per=1000)))
        if fmt == Format.csv:
            writer = csv.writer(sys.stdout)
            writer.writerow(EXPORT_FIELDS)
            for row in rows:
                writer.writerow([_csv_cell(row[f]) for f in EXPORT_FIELDS])
        else:
            # Written row by row, so a large list never sits in memory twice.
            sys.stdout.write("[")
            for i, row in enumerate(rows):
                sys.stdout.write(("," if i else "") + "\n  " + json.dumps(row, ensure_ascii=False))
            sys.stdout.write("\n]\n")


_OF_SUBSCRIPTION = {"status", "confirmed_at", "unsubscribed_at"}


def _export_row(subscriber: Subscriber, held: Subscription) -> dict[str, Any]:
    row = {f: getattr(held if f in _OF_SUBSCRIPTION else subscriber, f) for f in EXPORT_FIELDS}
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def _csv_cell(value: object) -> str:
    """Names come from a public form: a cell starting with = + - @ would be run as a formula
    by a spreadsheet, so it is prefixed with an apostrophe (OWASP's CSV injection advice)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@app.command("show")
def show(email: str) -> None:
    """The subscriber and the whole consent history as JSON (the GDPR export)."""
    with transaction() as session:
        subscriber = _find(session, email)
        typer.echo(json.dumps(privacy.export(session, subscriber, by=cli_actor()),
                               indent=2, ensure_ascii=False))


@app.command("erase")
def erase(email: str, yes: bool = typer.Option(False, "--yes", help="do not ask")) -> None:
    """Delete a person; keep only a hashed suppression entry so nothing mails them again.

    An address with no subscriber is still added to the suppression list, so a later
    import will not bring it in.
    """
    if not yes:
        typer.confirm(f"Erase {email} and its consent history for good?", abort=True)
    try:
        with transaction() as session:
            erased, hash_ = privacy.erase_address(session, email, by=cli_actor())
    except InvalidAddress as exc:
        err.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from None
    if erased:
        typer.echo(f"erased; suppression hash {hash_}")
    else:
        typer.echo(f"no subscriber with that address; suppression hash {hash_} kept so that "
                   "it is never mailed")


@app.command("count")
def count() -> None:
    """Subscriptions by list and status."""
    with transaction() as session:
        for slug, status, n in session.execute(
            select(MailingList.slug, Subscription.status, func.count())
            .join(MailingList, MailingList.id == Subscription.list_id)
            .group_by(MailingList.slug, Subscription.status)
            .order_by(MailingList.slug, Subscription.status)
        ):
            typer.echo(f"{slug} {status}: {n}")


def _list_of(slug: str | None) -> MailingList:
    with transaction() as session:
        lst = default_list(session) if slug is None else by_slug(session, slug)
        if lst is None:
            err.print(f"there is no list {slug!r} (`mailer lists list` names them)",
                      style="red", markup=False)
            raise typer.Exit(2)
        session.expunge(lst)
        return lst


def _find(session: Session, email: str) -> Subscriber:
    try:
        subscriber = find(session, email)
    except InvalidAddress as exc:
        err.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from None
    if subscriber is None:
        err.print(f"no subscriber with the address {email}", markup=False)
        raise typer.Exit(1)
    return subscriber
