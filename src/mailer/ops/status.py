"""One snapshot of the whole service: queues, workers, editions under way, alerts.

``mailer status``, the admin's ops page and ``/metrics`` all read it, so they always agree;
``collect(full=True)`` (the status command and the ops page) adds the readiness checks, the
SMTP replies and task failures the workers counted, the next automatic draft and the
sending processes. A Redis that cannot be reached is part of the answer, not an error.

The bulk queue's work is counted where it waits: Celery messages in Redis *and* deliveries
waiting in the database (queued, or deferred and due). After a Redis restart the first
count is 0 while the second is not, and ``queue_not_draining`` still sees the work.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.db import utcnow
from mailer.deliveries.models import Delivery, DeliveryState
from mailer.delivery import service as sending
from mailer.editions.models import Edition, EditionState
from mailer.ops import alerts as alerts_
from mailer.ops import queues as queues_
from mailer.ops import workers as workers_
from mailer.redis import get_redis
from mailer.tasks import BULK

log = logging.getLogger(__name__)

UNDER_WAY = (EditionState.sending, EditionState.paused)


@dataclass
class EditionStatus:
    id: int
    subject: str
    state: str
    scheduled_at: dt.datetime | None
    progress: sending.Progress | None

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
    # With full=True:
    checks: dict[str, str] | None = None
    smtp: dict[str, Any] | None = None
    tasks: dict[str, dict[str, int]] | None = None
    schedule: dict[str, Any] | None = None
    senders: list[dict[str, Any]] | None = None

    @property
    def healthy(self) -> bool:
        return not self.alerts

    @property
    def critical(self) -> bool:
        return any(a.severity == "critical" for a in self.alerts)

    @property
    def exit_code(self) -> int:
        """0 all is well; 1 look at this today (warnings only); 2 critical now."""
        return 2 if self.critical else 1 if self.alerts else 0

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
            "status": ("critical" if self.critical else "warning" if self.alerts else "ok"),
            **({} if self.checks is None else {
                "checks": self.checks, "smtp": self.smtp, "tasks": self.tasks,
                "schedule": _plain(self.schedule), "senders": self.senders}),
        }


def _plain(schedule: dict[str, Any] | None) -> dict[str, Any] | None:
    if schedule is None:
        return None
    last = schedule.get("last")
    return {"cron": schedule.get("cron"), "error": schedule.get("error"),
            "next": schedule["next"].isoformat() if schedule.get("next") else None,
            "last": None if last is None else {"ran_at": last.ran_at.isoformat(),
                                                "outcome": last.outcome}}


def editions_under_way(session: Session) -> list[EditionStatus]:
    """Every edition sending, paused or scheduled, oldest first."""
    rows = session.scalars(
        select(Edition).where(Edition.state.in_([*UNDER_WAY, EditionState.scheduled]))
        .order_by(Edition.id)
    ).all()
    return [EditionStatus(
        e.id, e.subject, e.state, e.scheduled_at,
        sending.progress(session, e.id) if e.state in UNDER_WAY else None) for e in rows]


RedisState = tuple[str | None, list[queues_.QueueState] | None, int | None,
                   list[workers_.WorkerInfo] | None]


def waiting_deliveries(session: Session) -> int:
    """Deliveries of editions being sent that wait for a worker: queued, or deferred and
    due. (A count over those rows: for the views, not for the send's hot path.)"""
    sending = select(Edition.id).where(Edition.state == EditionState.sending)
    now = utcnow()
    return int(session.scalar(
        select(func.count()).select_from(Delivery).where(
            Delivery.edition_id.in_(sending),
            or_(Delivery.state == DeliveryState.queued,
                (Delivery.state == DeliveryState.deferred) & (Delivery.next_attempt_at <= now)))
    ) or 0)


def redis_state(settings: Settings, session: Session | None = None) -> RedisState:
    """(error, queues, unacked, workers): the error is None when Redis answered. With a
    session, the bulk queue also counts the deliveries waiting in the database."""
    try:
        waiting = {BULK: waiting_deliveries(session)} if session is not None else {}
        client = get_redis()
        # One round trip for all of it (every admin page's banner asks): queues, unacked
        # tasks, heartbeats; the live workers' infos are a second.
        pipe = client.pipeline(transaction=False)
        queues_.ask(pipe)
        pipe.hlen("unacked")
        workers_.ask(pipe, settings.ops)
        replies = pipe.execute()
        queue_replies, unacked, worker_replies = (
            replies[:queues_.ASKED], replies[queues_.ASKED], replies[queues_.ASKED + 1:])
        return (None, queues_.answer(queue_replies, settings.ops.queue_stall_seconds, client,
                                     waiting),
                int(unacked), workers_.answer(worker_replies, client))
    except (redis.RedisError, OSError) as exc:
        log.warning("ops status cannot read Redis: %s", exc)
        return f"{type(exc).__name__}: {exc}", None, None, None


def collect(session: Session, settings: Settings, redis_part: RedisState | None = None, *,
            full: bool = False) -> Snapshot:
    error, queues, unacked, workers = redis_part or redis_state(settings, session)
    snapshot = Snapshot(utcnow(), error, queues, unacked, workers)
    snapshot.editions = editions_under_way(session)
    snapshot.rates = alerts_.watched_rates(session, settings.sending)
    snapshot.alerts = alerts_.evaluate(session, settings, queues=queues, workers=workers,
                                       rates=snapshot.rates)
    if full:
        _add_details(session, snapshot, settings)
    return snapshot


def full_snapshot(settings: Settings) -> Snapshot:
    """The snapshot with its details, as ``mailer status`` and the Ops page show it. The
    readiness checks run after the snapshot's own transaction has ended: on SQLite an open
    transaction holds the write lock, and the database check would wait for it."""
    from mailer.db import transaction
    from mailer.ops import readiness

    with transaction() as session:
        snapshot = collect(session, settings, full=True)
    snapshot.checks = readiness.checks(settings)
    return snapshot


def _add_details(session: Session, snapshot: Snapshot, settings: Settings) -> None:
    """What the status command and the ops page show besides the alerts (the readiness
    checks: :func:`full_snapshot`)."""
    from mailer import counters
    from mailer.delivery import holders

    snapshot.checks = {}
    if snapshot.redis_error is None:
        with contextlib.suppress(redis.RedisError, OSError):
            snapshot.smtp, snapshot.tasks = counters.smtp_figures(), counters.task_figures()
    try:
        from mailer.editions import rhythm

        snapshot.schedule = rhythm.overview(session, settings.editions.edition_schedule_cron,
                                            settings.identity.timezone)
    except Exception as exc:  # a bad schedule must not hide the rest
        log.warning("could not read the drafting schedule: %s", exc)
    snapshot.senders = holders.processes(session, settings.sending)
