"""An edition, after the send: how it went out and what readers did with it.

From the delivery rows (summed once the edition is sent, :class:`EditionSummary`):
delivered, deferred, refused, messages per minute and the receiving domains. From the counts
the send keeps (:class:`EditionDeferral`): the deferrals per minute of the domains that
deferred most. Fresh from their own tables on every view, as they keep arriving after the
send: bounces by class and complaints (``mailer.bounces.rates.class_counts``), unsubscribes
from its link (consent events that name it) and clicks per link (``mailer.clicks.queries``).
No figure names a reader.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, literal_column, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.bounces.models import BounceClass
from mailer.bounces.rates import class_counts
from mailer.clicks.queries import LinkFigures, per_link
from mailer.db import utcnow
from mailer.deliveries.models import Delivery, DeliveryState
from mailer.editions.models import Edition, EditionState
from mailer.insight import buckets
from mailer.insight.models import EditionDeferral, EditionSummary
from mailer.insight.tables import Table
from mailer.subscribers.models import ConsentEvent, ConsentEventKind, Subscriber

D = DeliveryState
#: The receiving domains a summary keeps, by deliveries (the rest are summed as "other").
DOMAINS_KEPT = 200
OTHER = "(other domains)"
#: The domains the deferrals over time are drawn for, most deferrals first; the rest are
#: summed as "other". Three and "other" use the four colours a chart has.
DEFERRING_DOMAINS_SHOWN = 3
ERASED = "(erased readers)"
#: Bounce classes shown per edition, in this order.
BOUNCE_CLASSES = ("hard", "soft", "policy", "delayed", "autoreply", "unparsed")
#: Edition states whose delivery rows will not change any more (a cancelled edition's once
#: the messages under way at the cancel have had their answer: see :func:`settled`).
SETTLED = (EditionState.sent, EditionState.cancelled)
#: Longer than any claim is held (``MAILER_LEASE_SECONDS``) after an edition is cancelled.
CANCEL_SETTLES = dt.timedelta(hours=1)


def settled(edition: Edition) -> bool:
    if edition.state == EditionState.sent:
        return True
    return (edition.state == EditionState.cancelled and edition.finished_at is not None
            and edition.finished_at < utcnow() - CANCEL_SETTLES)


@dataclass(frozen=True)
class DomainFigures:
    domain: str
    deliveries: int
    accepted: int
    deferred: int  # answered with a temporary refusal at least once
    refused: int  # bounced or failed in the end
    codes: dict[str, int]  # the last reply code of each delivery, "250": 9120…

    @property
    def deferred_percent(self) -> float:
        return round(100 * self.deferred / self.deliveries, 1) if self.deliveries else 0.0

    @property
    def refused_percent(self) -> float:
        return round(100 * self.refused / self.deliveries, 1) if self.deliveries else 0.0


@dataclass(frozen=True)
class EditionFigures:
    edition_id: int
    subject: str
    state: str
    audience: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    states: dict[str, int]
    delivered: int
    deferred: int
    bounced: dict[str, int]  # deliveries with a bounce of each class
    complaints: int
    unsubscribes: int
    links: list[LinkFigures]
    per_minute: list[tuple[str, int]]  # ("2026-12-03 09:14", messages accepted)
    #: Messages refused for good (bounced or failed) per minute of their last answer; None
    #: for a summary stored before they were counted.
    domains: list[DomainFigures]
    refused_per_minute: list[tuple[str, int]] | None = None
    #: ("2026-12-03 09:14", "example.org", deliveries it deferred then), in minute order.
    deferrals_per_minute: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def clicks(self) -> int:
        return sum(link.clicks for link in self.links)

    def tables(self) -> dict[str, Table]:
        outcome: list[list[str | int | float]] = [
            ["delivered", self.delivered], ["deferred at least once", self.deferred]]
        outcome += [[f"bounced: {klass}", n] for klass, n in self.bounced.items()]
        outcome += [["complaints", self.complaints],
                    ["unsubscribes from it", self.unsubscribes]]
        return {
            "outcome": Table("outcome", "How the edition went out", ["what", "count"], outcome),
            "clicks": Table("clicks", "Clicks per link", ["link", "url", "clicks",
                                                          "link checkers and previews"],
                            [[link.label, link.url, link.clicks,
                              link.head_requests + link.scanner_clicks]
                             for link in self.links]),
            "per-minute": self._per_minute(),
            "deferrals-per-minute": self._deferrals_per_minute(),
            "deferrals": Table("deferrals", "Receiving domains, most deferred first",
                               ["domain", "deliveries", "accepted", "deferred", "refused",
                                "deferred %"],
                               [[d.domain, d.deliveries, d.accepted, d.deferred, d.refused,
                                 d.deferred_percent]
                                for d in sorted(self.domains, key=lambda d: -d.deferred)[:20]
                                if d.deferred or d.refused]),
        }

    def _per_minute(self) -> Table:
        """How the send went over time: accepted, and refused for good, per minute."""
        if self.refused_per_minute is None:
            return Table("per-minute", "Messages accepted per minute (UTC)",
                         ["minute", "messages"], [list(row) for row in self.per_minute])
        accepted, refused = dict(self.per_minute), dict(self.refused_per_minute)
        return Table("per-minute", "Messages accepted and refused per minute (UTC)",
                     ["minute", "messages", "refused"],
                     [[minute, accepted.get(minute, 0), refused.get(minute, 0)]
                      for minute in sorted(accepted.keys() | refused.keys())])

    def _deferrals_per_minute(self) -> Table:
        """How the deferrals went over time: a column per domain that deferred most, the
        others summed in one, a row per minute in which some domain deferred."""
        totals: Counter[str] = Counter()
        for _, domain, n in self.deferrals_per_minute:
            totals[domain] += n
        shown = [d for d, _ in sorted(totals.items(), key=lambda t: (-t[1], t[0]))
                 ][:DEFERRING_DOMAINS_SHOWN]
        columns = shown + ([OTHER] if len(totals) > len(shown) else [])
        minutes: dict[str, Counter[str]] = {}
        for minute, domain, n in self.deferrals_per_minute:
            minutes.setdefault(minute, Counter())[domain if domain in shown else OTHER] += n
        return Table("deferrals-per-minute", "Deferrals per minute (UTC), by receiving domain",
                     ["minute", *columns],
                     [[minute, *(minutes[minute][c] for c in columns)]
                      for minute in sorted(minutes)])


def edition_figures(session: Session, edition_id: int) -> EditionFigures | None:
    edition = session.get(Edition, edition_id)
    if edition is None:
        return None
    summary = delivery_summary(session, edition)
    per_class = class_counts(session, edition_id)  # the states are the summary's
    unsubscribes = session.scalar(
        select(func.count()).select_from(ConsentEvent).where(
            ConsentEvent.edition_id == edition_id,
            ConsentEvent.kind == ConsentEventKind.unsubscribed)) or 0
    return EditionFigures(
        edition_id=edition.id, subject=edition.subject_snapshot or edition.subject,
        state=edition.state, audience=edition.audience_count, started_at=edition.started_at,
        finished_at=edition.finished_at, states=summary["states"],
        delivered=summary["states"].get(D.sent, 0), deferred=summary["deferred"],
        bounced={klass: per_class.get(klass, 0) for klass in BOUNCE_CLASSES},
        complaints=per_class.get(BounceClass.complaint, 0), unsubscribes=int(unsubscribes),
        links=per_link(session, edition_id),
        per_minute=[(minute, n) for minute, n in summary["per_minute"]],
        refused_per_minute=None if "refused_per_minute" not in summary else [
            (minute, n) for minute, n in summary["refused_per_minute"]],
        domains=domains_of(summary),
        deferrals_per_minute=deferrals_per_minute(session, edition_id))


def deferrals_per_minute(session: Session, edition_id: int) -> list[tuple[str, str, int]]:
    """The edition's deferrals as the send counted them (``mailer.delivery.ledger``): a few
    rows per minute of the send, so they are read afresh on every view."""
    return [(f"{minute:%Y-%m-%d %H:%M}", domain, n) for minute, domain, n in session.execute(
        select(EditionDeferral.minute, EditionDeferral.domain, EditionDeferral.deferrals)
        .where(EditionDeferral.edition_id == edition_id)
        .order_by(EditionDeferral.minute, EditionDeferral.domain))]


def domains_of(summary: dict[str, Any]) -> list[DomainFigures]:
    return [DomainFigures(**row) for row in summary["domains"]]


def delivery_summary(session: Session, edition: Edition) -> dict[str, Any]:
    """The figures of the edition's delivery rows: stored once the edition is settled (and
    read from there after), counted afresh while it is still going out."""
    stored = session.get(EditionSummary, edition.id)
    if stored is not None:
        return stored.figures
    figures = count_deliveries(session, edition.id)
    if settled(edition):
        try:
            with session.begin_nested():
                session.add(EditionSummary(edition_id=edition.id, made_at=utcnow(),
                                           figures=figures))
        except IntegrityError:  # two first views at once: the other stored the same
            pass
    return figures


def summarise(session: Session, edition_id: int) -> bool:
    """Store a settled edition's delivery figures now (when its send finishes), so that
    the first view does not pay for counting them. False if not settled or done before."""
    edition = session.get(Edition, edition_id)
    if edition is None or not settled(edition):
        return False
    if session.get(EditionSummary, edition_id) is not None:
        return False
    session.add(EditionSummary(edition_id=edition_id, made_at=utcnow(),
                               figures=count_deliveries(session, edition_id)))
    return True


def count_deliveries(session: Session, edition_id: int) -> dict[str, Any]:
    domain = func.coalesce(buckets.domain(session, Subscriber.email), ERASED)
    # Literal numbers, not parameters: PostgreSQL must see the same expression in the
    # GROUP BY as in the SELECT.
    was_put_off = case(((Delivery.attempts > 1) | (Delivery.state == literal_column(
        f"'{D.deferred}'")), literal_column("1")), else_=literal_column("0"))
    rows = session.execute(
        select(domain, Delivery.state, was_put_off, Delivery.smtp_code, func.count())
        .select_from(Delivery).outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.edition_id == edition_id)
        .group_by(domain, Delivery.state, was_put_off, Delivery.smtp_code)
    ).all()
    states: Counter[str] = Counter()
    per_domain: dict[str, dict[str, Any]] = {}
    total_deferred = 0
    for name, state, was_deferred, code, n in rows:
        states[state] += n
        total_deferred += n if was_deferred else 0
        if state in (D.skipped, D.cancelled):  # never offered to the domain
            continue
        row = per_domain.setdefault(name or ERASED, {
            "domain": name or ERASED, "deliveries": 0, "accepted": 0, "deferred": 0,
            "refused": 0, "codes": {}})
        row["deliveries"] += n
        row["accepted"] += n if state == D.sent else 0
        row["refused"] += n if state in (D.bounced, D.failed) else 0
        row["deferred"] += n if was_deferred else 0
        if code is not None:
            row["codes"][str(code)] = row["codes"].get(str(code), 0) + n
    ranked = sorted(per_domain.values(), key=lambda r: (-r["deliveries"], r["domain"]))
    kept, rest = ranked[:DOMAINS_KEPT], ranked[DOMAINS_KEPT:]
    if rest:
        kept.append(merge_domains(OTHER, rest))
    minute = buckets.minute(session, Delivery.sent_at)
    per_minute = session.execute(
        select(minute, func.count()).where(Delivery.edition_id == edition_id,
                                           Delivery.state == D.sent,
                                           Delivery.sent_at.is_not(None))
        .group_by(minute).order_by(minute)).all()
    # A refusal's row is not touched again after its answer: updated_at is when it came.
    refused_at = buckets.minute(session, Delivery.updated_at)
    refused = session.execute(
        select(refused_at, func.count()).where(Delivery.edition_id == edition_id,
                                               Delivery.state.in_([D.bounced, D.failed]))
        .group_by(refused_at).order_by(refused_at)).all()
    return {"states": dict(states), "deferred": total_deferred, "domains": kept,
            "per_minute": [[str(m), int(n)] for m, n in per_minute],
            "refused_per_minute": [[str(m), int(n)] for m, n in refused]}


def merge_domains(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"domain": name, "deliveries": 0, "accepted": 0, "deferred": 0,
                              "refused": 0, "codes": {}}
    for row in rows:
        for key in ("deliveries", "accepted", "deferred", "refused"):
            merged[key] += row[key]
        for code, n in row["codes"].items():
            merged["codes"][code] = merged["codes"].get(code, 0) + n
    return merged
