"""Importing confirmed readers from an older system, with their consent source recorded.

An import goes to one list. Good rows are kept, bad rows are reported with their line
numbers; an address on the suppression list (an erased person, a hard bounce) is never
brought back by an import, and a subscription that exists is never changed (someone who
left the list stays gone); a person already on another list gets a subscription to this
one, their record otherwise unchanged. Each imported
reader's consent event records where the consent came from (``source``, and what the
caller knows of it: ``Consent``); the import as a whole is in the audit log with who ran it
(``by``), written here for the CLI, the admin and the API alike.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.db import transaction
from mailer.lists.models import Subscription, SubscriptionStatus
from mailer.lists.service import default_list, find, slugs_of
from mailer.subscribers.addresses import InvalidAddress, normalise
from mailer.subscribers.models import (
    ConsentEvent,
    ConsentEventKind,
    Subscriber,
    Suppression,
)
from mailer.subscribers.signup import clean_text
from mailer.tokens import address_hash, random_id
from mailer.webhooks.events import CONFIRMED, emit_for_subscriber

COLUMNS = ("email", "first_name", "last_name", "organisation", "country", "consented_at")
CHUNK = 500


class Skip(StrEnum):
    """Why a row was not imported (the API answers it per item)."""

    invalid = "invalid"  # not an address, a wrong date, unreadable
    duplicate = "duplicate"  # the same address earlier in the same import
    suppressed = "suppressed"  # on the suppression list: never brought back by an import
    exists = "exists"  # already on the list, in whatever state: left unchanged


@dataclass(frozen=True)
class Consent:
    """What is known of the consent the imported readers gave, beside its ``source``: the
    version of the text they agreed to (``imported`` when unknown, as the CSV import
    records it), that text, and evidence (a form's name, a paper list's place)."""

    version: str = "imported"
    text: str | None = None
    evidence: str | None = None


@dataclass
class ImportReport:
    imported: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    #: Line → the public id of the reader imported from it.
    added: dict[int, str] = field(default_factory=dict)
    #: Line → why it was skipped (its words are in ``problems``).
    skips: dict[int, Skip] = field(default_factory=dict)

    def skip(self, line: int, why: Skip, message: str) -> None:
        self.problems.append((line, message))
        self.skips[line] = why

    @property
    def skipped(self) -> int:
        return len(self.problems)


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, str]
    #: Why the CSV reader could not read this row (then ``values`` is empty).
    error: str | None = None


def read_csv(stream: IO[str]) -> Iterator[Row]:
    """The rows of a CSV file with a header row. A row the csv module cannot read (a field
    over its size limit) comes out as a Row with an ``error``; the rest still come."""
    lines = _CountedLines(stream)
    reader = csv.DictReader(lines)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise ValueError(f"line 1: the header row cannot be read: {exc}") from None
    if fieldnames is None or "email" not in [f.strip().lower() for f in fieldnames]:
        raise ValueError("the CSV needs a header row with at least an 'email' column")
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The csv module's line_num lags behind on an error: count the lines ourselves.
            yield Row(lines.count, {}, error=f"cannot be read as CSV: {exc}")
            continue
        values = {(k or "").strip().lower(): (v or "").strip() for k, v in record.items()
                  if isinstance(v, str)}
        yield Row(reader.line_num, values)


class _CountedLines:
    def __init__(self, stream: IO[str]) -> None:
        self.stream, self.count = stream, 0

    def __iter__(self) -> _CountedLines:
        return self

    def __next__(self) -> str:
        line = next(self.stream)
        self.count += 1
        return line


def import_rows(
    rows: Iterable[Row], *, source: str, by: str, check_deliverability: bool, name: str = "",
    consent: Consent = Consent(),  # noqa: B008 (frozen)
    progress: Callable[[int], None] = lambda _n: None, list_id: int | None = None,
) -> ImportReport:
    """Import the rows into the list ``list_id`` (the default list when None), a chunk a
    transaction; then the audit entry ``subscribers.import`` (target ``name``: the file's,
    or the caller's) with who ran it, the list and the counts. ``check_deliverability``
    (``SignupSettings``) asks DNS about each address's domain, as a sign-up does.

    Raises ValueError for a list that does not exist or is archived."""
    with transaction() as session:
        lst = default_list(session) if list_id is None else find(session, list_id)
        if lst is None or lst.archived_at is not None:
            raise ValueError(f"there is no open list {list_id}")
        target, slug = lst.id, lst.slug
    report = ImportReport()
    seen: dict[str, int] = {}
    chunk: list[tuple[Row, str, str]] = []
    for row in rows:
        try:
            address, key = _check(row, check_deliverability)
        except InvalidRow as exc:
            report.skip(row.line, Skip.invalid, str(exc))
            progress(1)
            continue
        if key in seen:
            report.skip(row.line, Skip.duplicate, f"duplicate of line {seen[key]}")
            progress(1)
            continue
        seen[key] = row.line
        chunk.append((row, address, key))
        if len(chunk) >= CHUNK:
            _import_chunk(chunk, source, by, consent, report, target)
            progress(len(chunk))
            chunk = []
    if chunk:
        _import_chunk(chunk, source, by, consent, report, target)
        progress(len(chunk))
    report.problems.sort()
    with transaction() as session:
        record(session, actor=by, action="subscribers.import", target=name[:200],
               detail={"imported": report.imported, "skipped": report.skipped,
                       "source": source, "list": slug})
    return report


class InvalidRow(ValueError):
    pass


def _check(row: Row, check_deliverability: bool) -> tuple[str, str]:
    if row.error:
        raise InvalidRow(row.error)
    try:
        address, key = normalise(row.values.get("email", ""),
                                 check_deliverability=check_deliverability)
    except InvalidAddress as exc:
        raise InvalidRow(str(exc)) from None
    consented_at = row.values.get("consented_at")
    if consented_at:
        try:
            dt.datetime.fromisoformat(consented_at)
        except ValueError:
            raise InvalidRow(
                f"consented_at {consented_at[:40]!r} is not a date (use 2024-03-01 or "
                "2024-03-01T09:30:00)") from None
    return address, key


def _import_chunk(chunk: list[tuple[Row, str, str]], source: str, by: str,
                  consent: Consent, report: ImportReport, list_id: int) -> None:
    """One transaction per chunk; one savepoint per row, so a row that collides with a
    sign-up made at the same moment is reported and the rest of the chunk is kept."""
    keys = [key for _, _, key in chunk]
    hashes = {address_hash(k): k for k in keys}
    with transaction() as session:
        people = dict(session.execute(
            select(Subscriber.email_key, Subscriber.id).where(Subscriber.email_key.in_(keys))
        ).all())
        existing = dict(session.execute(
            select(Subscriber.email_key, Subscription.status)
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .where(Subscriber.email_key.in_(keys), Subscription.list_id == list_id)
        ).all())
        suppressed = dict(session.execute(
            select(Suppression.address_hash, Suppression.reason)
            .where(Suppression.address_hash.in_(list(hashes)))
        ).all())
        now = dt.datetime.now(dt.UTC)
        for row, address, key in chunk:
            hash_ = address_hash(key)
            if hash_ in suppressed:
                report.skip(row.line, Skip.suppressed,
                            f"on the suppression list ({suppressed[hash_]}): not imported")
                continue
            if key in existing:
                report.skip(row.line, Skip.exists,
                            f"already on the list ({existing[key]}): left unchanged")
                continue
            try:
                with session.begin_nested():
                    public_id = _add(session, row, address, key, hash_, source, by,
                                     consent, now, list_id, people.get(key))
            except IntegrityError:
                report.skip(row.line, Skip.exists,
                            "signed up while the import ran: left unchanged")
                continue
            report.imported += 1
            report.added[row.line] = public_id


def _add(session: Session, row: Row, address: str, key: str, hash_: str, source: str,
         by: str, consent: Consent, now: dt.datetime, list_id: int,
         person: int | None) -> str:
    subscriber = session.get(Subscriber, person) if person is not None else None
    if subscriber is None:
        subscriber = Subscriber(
            public_id=random_id(), email=address, email_key=key, address_hash=hash_,
            first_name=_cell(row, "first_name", 100), last_name=_cell(row, "last_name", 100),
            organisation=_cell(row, "organisation", 200),
            country=_cell(row, "country", 100), source=source[:100],
            created_at=now, updated_at=now,
        )
        session.add(subscriber)
        session.flush()
    session.add(Subscription(subscriber_id=subscriber.id, list_id=list_id,
                             status=SubscriptionStatus.confirmed, confirmed_at=now,
                             created_at=now, updated_at=now))
    session.add(ConsentEvent(
        subscriber_id=subscriber.id, address_hash=hash_, kind=ConsentEventKind.imported,
        list_id=list_id,
        at=now, source=source[:100], consent_version=consent.version[:32],
        consent_text=consent.text or None,
        detail={"line": row.line, "consented_at": row.values.get("consented_at") or None,
                "by": by, **({"evidence": consent.evidence} if consent.evidence else {})},
    ))
    session.flush()
    emit_for_subscriber(session, CONFIRMED, subscriber, imported=True,
                        lists=slugs_of(session, [list_id]))
    return subscriber.public_id


def _cell(row: Row, name: str, limit: int) -> str:
    return clean_text(row.values.get(name, ""), limit)
