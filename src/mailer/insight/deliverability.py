"""Deliverability: where mail is accepted, put off or refused, over the last editions.

The receiving domains with the most deliveries over the last ``editions`` settled
editions, each with how many of its deliveries were accepted, deferred at least once and
refused in the end, and the servers' last reply codes. From the editions' summaries
(:mod:`mailer.insight.editions`), so it costs a few rows however long the list.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, load_only

from mailer.editions.models import Edition
from mailer.insight.editions import (
    SETTLED,
    DomainFigures,
    delivery_summary,
    merge_domains,
)
from mailer.insight.models import EditionSummary
from mailer.insight.tables import Table

MAX_EDITIONS = 100


@dataclass(frozen=True)
class Deliverability:
    editions: list[tuple[int, str]]  # (id, subject), newest first
    domains: list[DomainFigures]

    def tables(self) -> dict[str, Table]:
        return {
            "domains": Table("domains", "Receiving domains, most deliveries first",
                             ["domain", "deliveries", "accepted", "deferred", "refused",
                              "deferred %", "refused %", "reply codes"],
                             [[d.domain, d.deliveries, d.accepted, d.deferred, d.refused,
                               d.deferred_percent, d.refused_percent, codes_text(d.codes)]
                              for d in self.domains]),
        }


def codes_text(codes: dict[str, int]) -> str:
    return " ".join(f"{code}×{n}" for code, n in sorted(codes.items(), key=lambda c: -c[1]))


def deliverability(session: Session, editions: int = 10, top: int = 15) -> Deliverability:
    editions = max(1, min(editions, MAX_EDITIONS))
    # The few columns it shows or needs, not the editions' snapshots (their whole mail).
    chosen = list(session.scalars(
        select(Edition).options(load_only(Edition.id, Edition.subject, Edition.subject_snapshot,
                                          Edition.state, Edition.started_at,
                                          Edition.finished_at))
        .where(Edition.state.in_(SETTLED), Edition.started_at.is_not(None))
        .order_by(Edition.started_at.desc(), Edition.id.desc()).limit(editions)))
    # Their summaries in one query (one round trip each cost the page 20 ms at 20 editions);
    # an edition not summed yet is summed now, as its own page would.
    stored = {summary.edition_id: summary.figures for summary in session.scalars(
        select(EditionSummary).where(EditionSummary.edition_id.in_([e.id for e in chosen])))}
    per_domain: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for edition in chosen:
        figures = stored.get(edition.id) or delivery_summary(session, edition)
        for row in figures["domains"]:
            per_domain.setdefault(row["domain"], []).append(row)
    merged = [merge_domains(name, rows) for name, rows in per_domain.items()]
    merged.sort(key=lambda r: (-r["deliveries"], r["domain"]))
    return Deliverability(
        editions=[(e.id, e.subject_snapshot or e.subject) for e in chosen],
        domains=[DomainFigures(**row) for row in merged[:top]])
