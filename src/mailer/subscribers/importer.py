"""Importing confirmed readers from an older system, with their consent source recorded.

Good rows are kept, bad rows are reported with their line numbers; an address on the
suppression list (an erased person, a hard bounce) is never brought back by an import,
and an existing subscriber is never changed (someone who left stays gone).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from sqlalchemy import select

from mailer.db import transaction
from mailer.subscribers.addresses import InvalidAddress, normalise
from mailer.subscribers.models import (
    ConsentEvent,
    ConsentEventKind,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from mailer.tokens import address_hash, random_id

COLUMNS = ("email", "first_name", "last_name", "organisation", "country", "consented_at")
CHUNK = 500


@dataclass
class ImportReport:
    imported: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.problems)


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, str]


def read_csv(stream: IO[str]) -> Iterator[Row]:
    reader = csv.DictReader(stream)
    if reader.fieldnames is None or "email" not in [f.strip().lower() for f in reader.fieldnames]:
        raise ValueError("the CSV needs a header row with at least an 'email' column")
    for record in reader:
        values = {(k or "").strip().lower(): (v or "").strip() for k, v in record.items()
                  if isinstance(v, str)}
        yield Row(reader.line_num, values)


def import_rows(
    rows: Iterable[Row], *, source: str, by: str = "cli",
    progress: Callable[[int], None] = lambda _n: None,
) -> ImportReport:
    report = ImportReport()
    seen: dict[str, int] = {}
    chunk: list[tuple[Row, str, str]] = []
    for row in rows:
        try:
            address, key = normalise(row.values.get("email", ""))
        except InvalidAddress as exc:
            report.problems.append((row.line, str(exc)))
            progress(1)
            continue
        if key in seen:
            report.problems.append((row.line, f"duplicate of line {seen[key]}"))
            progress(1)
            continue
        seen[key] = row.line
        chunk.append((row, address, key))
        if len(chunk) >= CHUNK:
            _import_chunk(chunk, source, by, report)
            progress(len(chunk))
            chunk = []
    if chunk:
        _import_chunk(chunk, source, by, report)
        progress(len(chunk))
    report.problems.sort()
    return report


def _import_chunk(chunk: list[tuple[Row, str, str]], source: str, by: str,
                  report: ImportReport) -> None:
    """One transaction per chunk: a failure loses at most this chunk, reported as such."""
    keys = [key for _, _, key in chunk]
    hashes = {address_hash(k): k for k in keys}
    with transaction() as session:
        existing = dict(session.execute(
            select(Subscriber.email_key, Subscriber.status).where(Subscriber.email_key.in_(keys))
        ).tuples().all())
        suppressed = dict(session.execute(
            select(Suppression.address_hash, Suppression.reason)
            .where(Suppression.address_hash.in_(list(hashes)))
        ).tuples().all())
        for row, address, key in chunk:
            hash_ = address_hash(key)
            if hash_ in suppressed:
                report.problems.append(
                    (row.line, f"on the suppression list ({suppressed[hash_]}): not imported"))
                continue
            if key in existing:
                report.problems.append(
                    (row.line, f"already a subscriber ({existing[key]}): left unchanged"))
                continue
            now = dt.datetime.now(dt.UTC)
            subscriber = Subscriber(
                public_id=random_id(), email=address, email_key=key, address_hash=hash_,
                first_name=_cell(row, "first_name", 100), last_name=_cell(row, "last_name", 100),
                organisation=_cell(row, "organisation", 200), country=_cell(row, "country", 100),
                status=SubscriberStatus.confirmed, source=source[:100], confirmed_at=now,
            )
            session.add(subscriber)
            session.flush()
            session.add(ConsentEvent(
                subscriber_id=subscriber.id, address_hash=hash_, kind=ConsentEventKind.imported,
                source=source[:100], consent_version="imported",
                detail={"line": row.line, "consented_at": row.values.get("consented_at") or None,
                        "by": by},
            ))
            report.imported += 1


def _cell(row: Row, name: str, limit: int) -> str:
    value = row.values.get(name, "")
    return " ".join("".join(c if c >= " " else " " for c in value).split())[:limit]
