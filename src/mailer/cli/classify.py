"""``mailer bounces classify``: what each bounce mail says, and whom it would act on.

Shared by the Typer command (:mod:`mailer.cli.bounces`) and the quick path that serves
the usual command line without importing Typer (:mod:`mailer.cli.quick`): both print
through :func:`run_classify`, so their output is the same by construction.

Without ``--attribute`` the settings are read with :func:`mailer.environment.read_bounce_reading`
(the five values classifying takes, no pydantic) and no database code is loaded; with it,
the full settings and a read-only session.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mailer.bounces.parse import BounceReport, FailedRecipient, OurAddresses


def run_classify(files: list[Path], *, as_json: bool, attribute: bool) -> int:
    """Print what each message of ``files`` says; the exit status (1: a message was refused,
    over MAILER_BOUNCE_MAX_BYTES)."""
    from mailer.bounces.parse import BounceTooLarge, OurAddresses, iter_messages, parse_bounce

    keys: tuple[bytes, ...]
    if attribute:
        from mailer.config import get_settings

        settings = get_settings()
        cap, ours, keys = (settings.bounces.bounce_max_bytes,
                           OurAddresses.of(settings.identity), tuple(settings.all_secrets))
    else:
        from mailer.environment import read_bounce_reading

        reading = read_bounce_reading()
        cap, ours, keys = reading.bounce_max_bytes, OurAddresses.of(reading), reading.secrets

    lookup = _ReadOnlyLookup(reads_database=attribute, ours=ours, keys=keys)
    rows: list[dict[str, Any]] = []
    refused = 0
    try:
        for path in files:
            for label, raw in iter_messages(path, limit=cap):
                try:
                    report = parse_bounce(raw, ours=ours, max_bytes=cap)
                except BounceTooLarge as exc:
                    refused += 1
                    row = {"message": label, "kind": "refused", "error": str(exc),
                           "recipients": []}
                else:
                    row = _describe(label, report, lookup)
                if as_json:
                    print(json.dumps(row, ensure_ascii=False), flush=True)
                else:
                    rows.append(row)
    finally:
        lookup.close()
    if not as_json:
        _print_table(rows)
    return 1 if refused else 0


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

    def __init__(self, *, reads_database: bool, ours: OurAddresses,
                 keys: tuple[bytes, ...]) -> None:
        self.session: Session | None = None
        self.problem = "" if reads_database else NOT_READ
        self.ours = ours
        self.keys = keys  # what a VERP token or a Message-ID is checked with

    def attribute(self, report: BounceReport, failure: FailedRecipient | None) -> dict[str, Any]:
        if not self.problem:
            self.problem = _no_sqlite_database()
        if not self.problem:
            from sqlalchemy.exc import SQLAlchemyError

            from mailer.bounces.attribute import attribute

            try:
                if self.session is None:
                    self.session = _read_only_session()
                return asdict(attribute(self.session, report, failure, ours=self.ours,
                                        keys=self.keys))
            except (SQLAlchemyError, OSError) as exc:
                self.problem = "database not reachable: " + " ".join(str(exc).split())[:200]
                self.close()
        return _without_database(report, self.problem, self.keys)

    def close(self) -> None:
        if self.session is not None:
            bind = self.session.get_bind()
            self.session.rollback()
            self.session.close()
            bind.dispose()  # type: ignore[union-attr]
            self.session = None


NOT_READ = "database not read (--attribute reads it)"


def _without_database(report: BounceReport, problem: str,
                      keys: tuple[bytes, ...]) -> dict[str, Any]:
    """No database: a forged VERP token is still known to be forged, nothing else is."""
    from mailer.emails.verp import VerpToken, parse_return_path

    nobody: dict[str, Any] = {"delivery_id": None, "edition_id": None, "subscriber_id": None,
                              "confirmation_token_id": None, "unverified": "",
                              "claimed_delivery_id": None, "claimed_subscriber_id": None}
    forged = ""
    for address in [*report.addressed_to, report.original_return_path]:
        token = parse_return_path(address, keys=keys) if address else None
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
