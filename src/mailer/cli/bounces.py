"""``mailer bounces``: inspect, receive and import bounce mails.

``classify`` lives here; ``serve`` and ``import`` register on the same group from
:mod:`mailer.cli.bounce_intake`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mailer.bounces.attribute import Attribution
    from mailer.bounces.parse import BounceReport, FailedRecipient

app = typer.Typer(no_args_is_help=True, help="Bounces and complaints.")


@app.command("classify")
def classify(
    files: list[Path] = typer.Argument(..., exists=True,
                                       help=".eml files, mbox files or Maildir folders"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per message"),
) -> None:
    """Show what each bounce mail says: every failed recipient, its class, status code and
    diagnostic, and whom it would be attributed to and why. Changes nothing.

    Attribution reads the database (read-only); when it cannot be reached, the
    classification is still shown and the attribution says so. Exits with 1 when a
    message was refused (over MAILER_BOUNCE_MAX_BYTES).
    """
    from mailer.bounces.parse import BounceTooLarge, iter_messages, parse_bounce

    lookup = _ReadOnlyLookup()
    rows: list[dict[str, Any]] = []
    refused = 0
    try:
        for path in files:
            for label, raw in iter_messages(path):
                try:
                    report = parse_bounce(raw)
                except BounceTooLarge as exc:
                    refused += 1
                    row = {"message": label, "kind": "refused", "error": str(exc),
                           "recipients": []}
                else:
                    row = _describe(label, report, lookup)
                if as_json:
                    typer.echo(json.dumps(row, ensure_ascii=False))
                else:
                    rows.append(row)
    finally:
        lookup.close()
    if not as_json:
        _print_table(rows)
    if refused:
        raise typer.Exit(1)


def _describe(label: str, report: BounceReport, lookup: _ReadOnlyLookup) -> dict[str, Any]:
    row: dict[str, Any] = {
        "message": label, "kind": report.kind, "subject": report.subject,
        "message_id": report.message_id, "addressed_to": report.addressed_to,
        "original_message_id": report.original_message_id,
        "original_return_path": report.original_return_path,
        "feedback_type": report.feedback_type, "error": report.error, "recipients": [],
    }
    for failure in report.recipients:
        row["recipients"].append({
            "recipient": failure.recipient, "original_recipient": failure.original_recipient,
            "class": str(failure.bounce_class), "status": failure.status,
            "action": failure.action, "diagnostic": failure.diagnostic,
            "remote_mta": failure.remote_mta,
            "attribution": asdict(lookup.attribute(report, failure)),
        })
    if not report.recipients:
        row["attribution"] = asdict(lookup.attribute(report, None))
    return row


class _ReadOnlyLookup:
    """Attribution against the database, opened read-only on first use; if it cannot be
    reached, every later message says so instead of failing."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.problem = ""

    def attribute(self, report: BounceReport, failure: FailedRecipient | None) -> Attribution:
        from sqlalchemy.exc import SQLAlchemyError

        from mailer.bounces.attribute import Attribution, attribute, find_verp_token, forged_note

        if not self.problem:
            try:
                if self.session is None:
                    self.session = _read_only_session()
                return attribute(self.session, report, failure)
            except (SQLAlchemyError, OSError) as exc:
                self.problem = " ".join(str(exc).split())[:200]
                self.close()
        # No database: a forged token is still known to be forged, nothing else is.
        token, where, forged = find_verp_token(report)
        if forged and token is None:
            return Attribution("none", forged_note(forged))
        seen = f"; VERP token {where.split('@')[0]} valid" if token else ""
        return Attribution("unknown", f"database not reachable{seen} ({self.problem})")

    def close(self) -> None:
        if self.session is not None:
            bind = self.session.get_bind()
            self.session.rollback()
            self.session.close()
            bind.dispose()  # type: ignore[union-attr]
            self.session = None


def _read_only_session() -> Session:
    """A session that cannot write: SQLite opened with mode=ro, PostgreSQL in a read-only
    transaction. Its own engine, so no pool or BEGIN IMMEDIATE of the service is touched."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import NullPool

    from mailer.config import get_settings

    url = make_url(get_settings().database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if not path.is_file():
            raise FileNotFoundError(f"no SQLite database at {path}")
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=NullPool)
    else:
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
        engine = engine.execution_options(postgresql_readonly=True)
    return Session(bind=engine)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=True)
    for column in ("message", "kind", "recipient", "class", "status", "diagnostic",
                   "attribution"):
        table.add_column(column, overflow="fold")
    for row in rows:
        name = Path(row["message"].split("#")[0]).name + (
            "#" + row["message"].split("#")[1] if "#" in row["message"] else "")
        recipients = row["recipients"] or [{
            "recipient": "", "class": "", "status": "",
            "diagnostic": row.get("error", ""), "attribution": row.get("attribution"),
        }]
        for failure in recipients:
            attribution = failure.get("attribution") or {}
            how = f"{attribution.get('method', '')}: {attribution.get('note', '')}".strip(": ")
            table.add_row(name, row["kind"], failure["recipient"], failure["class"],
                          failure["status"], _short(failure["diagnostic"]), how,
                          style=_STYLE.get(failure["class"] or row["kind"], ""))
    Console().print(table)


_STYLE = {"hard": "red", "policy": "yellow", "complaint": "magenta", "unparsed": "bold",
          "refused": "bold red"}


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
