"""``mailer bounces``: inspect, measure, receive and import bounce mails.

``classify`` and ``evaluate`` live here; ``serve`` and ``import`` register on the same
group from :mod:`mailer.cli.bounce_intake`. Neither of these two imports the database
layer unless a database is there to read: they start in the time the parser takes.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mailer.bounces.parse import BounceReport, FailedRecipient

app = typer.Typer(no_args_is_help=True, help="Bounces and complaints.")


@app.command("classify")
def classify(
    files: list[Path] = typer.Argument(..., exists=True,
                                       help=".eml files, mbox files or Maildir folders"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per message"),
    attribute: bool = typer.Option(
        False, "--attribute", help="Also look each bounce up in the database (read-only): "
                                   "whom it would act on, and why"),
) -> None:
    """Show what each bounce mail says: every failed recipient, its class, the strength of
    the evidence, what it will do, status code and diagnostic; with --attribute, whom it
    would be attributed to and why. Changes nothing.

    "effect" is what the verdict does to the reader it is tied to: "suppress now" (a hard
    bounce on strong evidence, a complaint), "after a repeat" (a hard bounce on weak
    evidence: suppresses when a later edition bounces too), "counted" (soft), "nothing".

    Without --attribute no database is read (and none of its code loaded: the command
    starts in a fraction of the time); the attribution column then says only whether a
    VERP token in the message is ours or forged. --attribute reads the database
    (read-only); when it cannot be reached, the classification is still shown and the
    attribution says so. Exits with 1 when a message was refused (over
    MAILER_BOUNCE_MAX_BYTES).
    """
    from mailer.bounces.parse import BounceTooLarge, iter_messages, parse_bounce
    from mailer.config import get_settings

    cap = get_settings().bounces.bounce_max_bytes

    lookup = _ReadOnlyLookup(reads_database=attribute)
    rows: list[dict[str, Any]] = []
    refused = 0
    try:
        for path in files:
            for label, raw in iter_messages(path, limit=cap):
                try:
                    report = parse_bounce(raw, max_bytes=cap)
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


@app.command("evaluate")
def evaluate(
    folder: Path = typer.Argument(..., exists=True, file_okay=False,
                                  help="A corpus: .eml files and a manifest.json"),
    part: str = typer.Option("all", help="Only the manifest entries of this part: "
                                         "dev, held-out or all"),
    as_json: bool = typer.Option(False, "--json", help="The figures as one JSON object"),
    misses: bool = typer.Option(False, "--misses",
                                help="Also list every disagreement with the manifest"),
) -> None:
    """Measure the classifier on a labelled corpus (tests/fixtures/bounces/ is ours).

    Prints agreement, precision and recall of "hard", the precision of the verdicts that
    suppress at once, recipients found, non-bounces given a bounce class, complaints
    recognised and crashes. Reads no database, changes nothing.
    """
    from mailer.bounces import evaluate as measure

    if part not in ("all", "dev", "held-out"):
        raise typer.BadParameter("expected dev, held-out or all", param_hint="--part")
    try:
        result = measure.evaluate(folder, part=part)
    except (ValueError, OSError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    figures = result.figures()
    if as_json:
        if misses:
            figures["misses"] = [asdict(m) for m in result.misses]
        typer.echo(json.dumps({"corpus": str(folder), "part": part, **figures}))
        return
    typer.echo(f"{folder} ({part}):")
    for line in measure.render(figures):
        typer.echo(f"  {line}")
    if misses:
        for miss in result.misses:
            typer.echo(f"  - {miss.message}: expected {miss.expected}, got {miss.got}")


def _describe(label: str, report: BounceReport, lookup: _ReadOnlyLookup) -> dict[str, Any]:
    row: dict[str, Any] = {
        "message": label, "kind": report.kind, "subject": report.subject,
        "message_id": report.message_id, "addressed_to": report.addressed_to,
        "original_message_id": report.original_message_id,
        "original_return_path": report.original_return_path,
        "feedback_type": report.feedback_type, "error": report.error, "recipients": [],
    }
    from mailer.bounces.classify import effect_of

    for failure in report.recipients:
        row["recipients"].append({
            "recipient": failure.recipient, "original_recipient": failure.original_recipient,
            "class": str(failure.bounce_class), "strength": failure.strength,
            "effect": effect_of(failure.bounce_class, failure.strength),
            "status": failure.status,
            "action": failure.action, "diagnostic": failure.diagnostic,
            "remote_mta": failure.remote_mta,
            "attribution": lookup.attribute(report, failure),
        })
    if not report.recipients:
        row["attribution"] = lookup.attribute(report, None)
    return row


class _ReadOnlyLookup:
    """Attribution against the database, opened read-only on first use; if it cannot be
    reached, every later message says so instead of failing. SQLAlchemy and the models are
    imported only when there is a database to read."""

    def __init__(self, reads_database: bool = True) -> None:
        self.session: Session | None = None
        self.problem = "" if reads_database else NOT_READ

    def attribute(self, report: BounceReport, failure: FailedRecipient | None) -> dict[str, Any]:
        if not self.problem:
            self.problem = _no_sqlite_database()
        if not self.problem:
            from sqlalchemy.exc import SQLAlchemyError

            from mailer.bounces.attribute import attribute

            try:
                if self.session is None:
                    self.session = _read_only_session()
                return asdict(attribute(self.session, report, failure))
            except (SQLAlchemyError, OSError) as exc:
                self.problem = "database not reachable: " + " ".join(str(exc).split())[:200]
                self.close()
        return _without_database(report, self.problem)

    def close(self) -> None:
        if self.session is not None:
            bind = self.session.get_bind()
            self.session.rollback()
            self.session.close()
            bind.dispose()  # type: ignore[union-attr]
            self.session = None


NOT_READ = "database not read (--attribute reads it)"


def _without_database(report: BounceReport, problem: str) -> dict[str, Any]:
    """No database: a forged VERP token is still known to be forged, nothing else is."""
    from mailer.emails.verp import VerpToken, parse_return_path

    nobody: dict[str, Any] = {"delivery_id": None, "edition_id": None, "subscriber_id": None,
                              "confirmation_token_id": None, "unverified": "",
                              "claimed_delivery_id": None, "claimed_subscriber_id": None}
    forged = ""
    for address in [*report.addressed_to, report.original_return_path]:
        token = parse_return_path(address) if address else None
        if isinstance(token, VerpToken):
            return {"method": "unknown", "note": f"VERP token {address.split('@')[0]} "
                                                 f"valid; {problem}",
                    **nobody}
        if token is False and not forged:
            forged = address
    if forged:  # as mailer.bounces.attribute says it (FORGED_TOKEN), without its imports
        return {"method": "none", "note": f"VERP token {forged.split('@')[0]} forged "
                                          "(signature fails): nobody attributed",
                **nobody, "unverified": "forged-token"}
    return {"method": "unknown", "note": problem, **nobody}


def _no_sqlite_database() -> str:
    """Why there is no database to read, told without importing SQLAlchemy ('' if there
    may be one): a SQLite file that does not exist is the usual case on a laptop."""
    from urllib.parse import unquote, urlsplit

    from mailer.config import get_settings

    url = get_settings().database_url
    if url.split(":", 1)[0].split("+", 1)[0] != "sqlite":
        return ""
    path = unquote(urlsplit(url).path)[1:]  # sqlite:///relative, sqlite:////absolute
    if path and not Path(path).is_file():
        return f"database not reachable: no SQLite database at {path}"
    return ""


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
    """One block per failed recipient, a field per line, long values wrapped under their
    field: readable at any terminal width. Written without Rich, whose import alone took
    60 ms of this command's start-up; coloured only on a terminal (and not under NO_COLOR).
    """
    import os
    import shutil
    import sys
    import textwrap

    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    width = max(shutil.get_terminal_size().columns, 40)
    label = max(len(name) for name in _FIELDS) + 2
    for row in rows:
        name = Path(row["message"].split("#")[0]).name + (
            "#" + row["message"].split("#")[1] if "#" in row["message"] else "")
        recipients = row["recipients"] or [{
            "recipient": "", "class": "", "strength": "", "effect": "nothing", "status": "",
            "diagnostic": row.get("error", ""), "attribution": row.get("attribution"),
        }]
        for failure in recipients:
            attribution = failure.get("attribution") or {}
            how = f"{attribution.get('method', '')}: {attribution.get('note', '')}".strip(": ")
            klass = failure["class"] + (f" ({failure['strength']})" if failure.get("strength")
                                        else "")
            heading = f"{name}  {row['kind']}"
            code = _COLOUR.get(failure["class"] or row["kind"]) if colour else None
            print(f"\x1b[{code}m{heading}\x1b[0m" if code else heading)
            values = (failure["recipient"], klass, failure["effect"], failure["status"],
                      _short(failure["diagnostic"]), how)
            for field, value in zip(_FIELDS, values, strict=True):
                lines = textwrap.wrap(value, width - label - 2) or [""]
                print(f"  {field:<{label}}{lines[0]}".rstrip())
                for more in lines[1:]:
                    print(" " * (label + 2) + more)
            print()


_FIELDS = ("recipient", "class", "effect", "status", "diagnostic", "attribution")
#: ANSI colours (SGR codes) of a verdict's heading on a terminal.
_COLOUR = {"hard": "31", "policy": "33", "complaint": "35", "unparsed": "1",
           "refused": "1;31"}


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
