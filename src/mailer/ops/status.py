"""One snapshot of the whole service: queues, workers, editions under way, alerts.

``mailer status``, the admin's ops page and ``/readyz`` all read it, so they always agree.
A Redis that cannot be reached is part of the answer, not an error.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.db import utcnow
from mailer.delivery import service as delivery
from mailer.editions.models import Edition, EditionState
from mailer.ops import alerts as alerts_
from mailer.ops import queues as queues_
from mailer.ops import workers as workers_
from mailer.redis import get_redis

log = logging.getLogger(__name__)

UNDER_WAY = (EditionState.sending, EditionState.paused)


@dataclass
class EditionStatus:
    id: int
    subject: str
    state: str
    scheduled_at: dt.datetime | None
    progress: delivery.Progress | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "subject": self.subject, "state": self.state,
                               "scheduled_at": self.scheduled_at.isoformat()
                               if self.scheduled_at else None}
        if self.progress is not None:
            out["progress"] = self.progress.as_dict()
        return out


@dataclass
class Snapshot:
    at: dt.datetime
    redis_error: str | None
    queues: list[queues_.QueueState] | None
    unacked: int | None
    workers: list[workers_.WorkerInfo] | None
    editions: list[EditionStatus] = field(default_factory=list)
    alerts: list[alerts_.Alert] = field(default_factory=list)
    #: Bounce and complaint rates of the editions watched for complaints.
    rates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.alerts

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(timespec="seconds"),
            "healthy": self.healthy,
            "redis": "ok" if self.redis_error is None else f"error: {self.redis_error}",
            "queues": [q.as_dict() for q in self.queues] if self.queues is not None else None,
            "unacked": self.unacked,
            "workers": [w.as_dict() for w in self.workers] if self.workers is not None else None,
            "editions": [e.as_dict() for e in self.editions],
            "alerts": [a.as_dict() for a in self.alerts],
        }


def editions_under_way(session: Session) -> list[EditionStatus]:
    """Every edition sending, paused or scheduled, oldest first."""
    rows = session.scalars(
        select(Edition).where(Edition.state.in_([*UNDER_WAY, EditionState.scheduled]))
        .order_by(Edition.id)
    ).all()
    return [EditionStatus(
        e.id, e.subject, e.state, e.scheduled_at,
        delivery.progress(session, e.id) if e.state in UNDER_WAY else None) for e in rows]


RedisState = tuple[str | None, list[queues_.QueueState] | None, int | None,
                   list[workers_.WorkerInfo] | None]


def redis_state() -> RedisState:
    """(error, queues, unacked, workers): the error is None when Redis answered."""
    try:
        client = get_redis()
        return None, queues_.states(client), queues_.unacked(client), workers_.alive(client)
    except (redis.RedisError, OSError) as exc:
        log.warning("ops status cannot read Redis: %s", exc)
        return f"{type(exc).__name__}: {exc}", None, None, None


def collect(session: Session, redis_part: RedisState | None = None) -> Snapshot:
    error, queues, unacked, workers = redis_part or redis_state()
    snapshot = Snapshot(utcnow(), error, queues, unacked, workers)
    snapshot.editions = editions_under_way(session)
    snapshot.rates = alerts_.watched_rates(session)
    snapshot.alerts = alerts_.evaluate(session, queues=queues, workers=workers,
                                       rates=snapshot.rates)
    return snapshot
