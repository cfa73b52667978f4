"""The list over time: confirmed sign-ups, unsubscribes by channel, bounces and
complaints, week by week (Mondays, UTC), and how many readers are in each status now.

From the consent events (every change of anyone's consent is one) and the bounce rows;
bounces that acted on nobody (unverified) are left out. Counts per week only; a week that
is over is counted once and kept (:class:`~mailer.insight.models.ListWeek`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.bounces.models import Bounce, BounceClass, Trust
from mailer.db import utcnow
from mailer.insight import buckets
from mailer.insight.models import ListWeek
from mailer.insight.tables import Table
from mailer.lists.models import Subscription
from mailer.subscribers.models import ConsentEvent, ConsentEventKind

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
                                   for w in self.weeks] if self.channels else []),
            "statuses": Table("statuses", "Readers by status, now", ["status", "readers"],
                              [[status, n] for status, n in self.statuses.items()]),
        }


def list_figures(session: Session, weeks: int = 26, *, now: dt.datetime | None = None
                 ) -> ListFigures:
    """The last ``weeks`` weeks, this one included. A week that is over is counted once and
    kept (:class:`ListWeek`); only the weeks not kept yet and the current one are counted
    from the events."""
    weeks = max(1, min(weeks, MAX_WEEKS))
    today = (now or utcnow()).date()
    this_monday = today - dt.timedelta(days=today.weekday())
    first = this_monday - dt.timedelta(weeks=weeks - 1)
    starts = [(first + dt.timedelta(weeks=i)).isoformat() for i in range(weeks)]
    kept = {row.starts: row.figures for row in session.scalars(
        select(ListWeek).where(ListWeek.starts.in_(starts[:-1])))}
    missing = [s for s in starts[:-1] if s not in kept]
    if missing:
        counted = _count(session, dt.date.fromisoformat(missing[0]), this_monday)
        try:
            with session.begin_nested():
                for starts_on in missing:
                    kept[starts_on] = counted.get(starts_on, _nothing())
                    session.add(ListWeek(starts=starts_on, made_at=utcnow(),
                                         figures=kept[starts_on]))
        except IntegrityError:  # another view kept them at the same moment: the same counts
            pass
    current = _count(session, this_monday, None)
    kept[starts[-1]] = current.get(starts[-1], _nothing())

    statuses = {status: int(n) for status, n in session.execute(
        select(Subscription.status, func.count()).group_by(Subscription.status)
        .order_by(Subscription.status))}
    seen = {channel for s in starts for channel in kept[s]["unsubscribed"]}
    channels = [c for c in CHANNELS if c in seen] + sorted(seen - set(CHANNELS))
    return ListFigures(
        weeks=[Week(s, kept[s]["confirmed"], kept[s]["unsubscribed"], kept[s]["bounces"],
                    kept[s]["complaints"]) for s in starts],
        channels=channels, statuses=statuses)


def _nothing() -> dict[str, Any]:
    return {"confirmed": 0, "unsubscribed": {}, "bounces": 0, "complaints": 0}


def _count(session: Session, first: dt.date, until: dt.date | None
           ) -> dict[str, dict[str, Any]]:
    """The weeks from the Monday ``first`` up to the Monday ``until`` (None: up to now),
    counted from the consent events and the bounces; weeks with nothing left out."""
    since = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    before = dt.datetime.combine(until, dt.time(), tzinfo=dt.UTC) if until else None
    weeks: dict[str, dict[str, Any]] = {}

    week = buckets.week(session, ConsentEvent.at)
    events = (select(week, ConsentEvent.kind, ConsentEvent.channel, func.count())
              .where(ConsentEvent.kind.in_([ConsentEventKind.confirmed,
                                            ConsentEventKind.unsubscribed]),
                     ConsentEvent.at >= since)
              .group_by(week, ConsentEvent.kind, ConsentEvent.channel))
    if before is not None:
        events = events.where(ConsentEvent.at < before)
    for starts_on, kind, channel, n in session.execute(events):
        figures = weeks.setdefault(str(starts_on), _nothing())
        if kind == ConsentEventKind.confirmed:
            figures["confirmed"] += n
        else:
            name = channel or "unknown"
            figures["unsubscribed"][name] = figures["unsubscribed"].get(name, 0) + n

    week = buckets.week(session, Bounce.received_at)
    bounces = (select(week, Bounce.bounce_class, func.count())
               .where(Bounce.bounce_class.in_([*BOUNCES, BounceClass.complaint]),
                      Bounce.received_at >= since, Bounce.trust != Trust.unverified)
               .group_by(week, Bounce.bounce_class))
    if before is not None:
        bounces = bounces.where(Bounce.received_at < before)
    for starts_on, klass, n in session.execute(bounces):
        figures = weeks.setdefault(str(starts_on), _nothing())
        figures["complaints" if klass == BounceClass.complaint else "bounces"] += n
    return weeks
