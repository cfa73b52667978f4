"""The list over time: confirmed sign-ups, unsubscribes by channel, bounces and
complaints, week by week (Mondays, UTC), and how many readers are in each status now.

From the consent events (every change of anyone's consent is one) and the bounce rows;
bounces that acted on nobody (unverified) are left out. Counts per week only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.bounces.models import Bounce, BounceClass, Trust
from mailer.db import utcnow
from mailer.insight import buckets
from mailer.insight.tables import Table
from mailer.subscribers.models import ConsentEvent, ConsentEventKind, Subscriber

#: Unsubscribe channels as the consent events name them, in the order shown.
CHANNELS = ("link", "one-click", "complaint", "api", "admin", "unconfirmed")
BOUNCES = (BounceClass.hard, BounceClass.soft, BounceClass.policy)
MAX_WEEKS = 520


@dataclass(frozen=True)
class Week:
    starts: str  # the Monday, 2026-11-30
    confirmed: int
    unsubscribed: dict[str, int]  # by channel
    bounces: int
    complaints: int

    @property
    def unsubscribes(self) -> int:
        return sum(self.unsubscribed.values())


@dataclass(frozen=True)
class ListFigures:
    weeks: list[Week]
    channels: list[str]  # the channels that occur, in CHANNELS order, then any others
    statuses: dict[str, int]

    def tables(self) -> dict[str, Table]:
        return {
            "weeks": Table("weeks", "Week by week (weeks start on Monday, UTC)",
                           ["week", "confirmed sign-ups", "unsubscribes", "bounces",
                            "complaints"],
                           [[w.starts, w.confirmed, w.unsubscribes, w.bounces, w.complaints]
                            for w in self.weeks]),
            "unsubscribes": Table("unsubscribes", "Unsubscribes by channel, week by week",
                                  ["week", *self.channels],
                                  [[w.starts, *[w.unsubscribed.get(c, 0) for c in self.channels]]
                                   for w in self.weeks]),
            "statuses": Table("statuses", "Readers by status, now", ["status", "readers"],
                              [[status, n] for status, n in self.statuses.items()]),
        }


def list_figures(session: Session, weeks: int = 26, *, now: dt.datetime | None = None
                 ) -> ListFigures:
    weeks = max(1, min(weeks, MAX_WEEKS))
    today = (now or utcnow()).date()
    first = today - dt.timedelta(days=today.weekday() + 7 * (weeks - 1))
    since = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    starts = [(first + dt.timedelta(weeks=i)).isoformat() for i in range(weeks)]
    confirmed = dict.fromkeys(starts, 0)
    unsubscribed: dict[str, dict[str, int]] = {s: {} for s in starts}
    bounces = dict.fromkeys(starts, 0)
    complaints = dict.fromkeys(starts, 0)
    seen: set[str] = set()

    week = buckets.week(session, ConsentEvent.at)
    for starts_on, kind, channel, n in session.execute(
            select(week, ConsentEvent.kind, ConsentEvent.channel, func.count())
            .where(ConsentEvent.kind.in_([ConsentEventKind.confirmed,
                                          ConsentEventKind.unsubscribed]),
                   ConsentEvent.at >= since)
            .group_by(week, ConsentEvent.kind, ConsentEvent.channel)):
        if starts_on not in confirmed:
            continue
        if kind == ConsentEventKind.confirmed:
            confirmed[starts_on] += n
        else:
            name = channel or "unknown"
            seen.add(name)
            unsubscribed[starts_on][name] = unsubscribed[starts_on].get(name, 0) + n

    week = buckets.week(session, Bounce.received_at)
    for starts_on, klass, n in session.execute(
            select(week, Bounce.bounce_class, func.count())
            .where(Bounce.bounce_class.in_([*BOUNCES, BounceClass.complaint]),
                   Bounce.received_at >= since, Bounce.trust != Trust.unverified)
            .group_by(week, Bounce.bounce_class)):
        if starts_on not in bounces:
            continue
        if klass == BounceClass.complaint:
            complaints[starts_on] += n
        else:
            bounces[starts_on] += n

    statuses = {status: int(n) for status, n in session.execute(
        select(Subscriber.status, func.count()).group_by(Subscriber.status)
        .order_by(Subscriber.status))}
    channels = [c for c in CHANNELS if c in seen] + sorted(seen - set(CHANNELS))
    return ListFigures(
        weeks=[Week(s, confirmed[s], unsubscribed[s], bounces[s], complaints[s])
               for s in starts],
        channels=channels, statuses=statuses)
