"""The sweeper (run by beat every ``MAILER_SWEEP_EVERY_SECONDS``): puts back to work what a
dead process or a lost Redis message left behind, owns every retry, finishes editions whose
deliveries are all final, and starts scheduled sends.

- ``sending`` under a holder that is gone (no heartbeat, or its process no longer runs on
  this machine), or past its lease: queued again (cancelled, if the edition was). At most
  the messages its holder sent since its last commit can be duplicates.
- ``deferred`` and due: queued for its retry. The database holds when each is due; no
  Celery countdown does.
- ``queued``, in no batch a live process is working on, untouched for
  ``requeue_after_seconds`` while the bulk queue is empty: its Celery message was lost (a
  Redis restart, a whole worker killed with the tasks it held). Queued again; if the
  message was not lost after all, the second task finds nothing to claim.
- ``sent`` is never queued again.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.db import utcnow
from mailer.deliveries.models import Delivery, DeliveryState
from mailer.delivery import holders
from mailer.delivery import service as sending
from mailer.editions.models import Edition, EditionState

D = DeliveryState


@dataclass
class SweepReport:
    reclaimed: int = 0
    retried: int = 0
    requeued: int = 0
    finished: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def sweep(session: Session, settings: Settings, *, bulk_queue_empty: bool) -> SweepReport:
    """Queue again what no live process will send: the claims of gone holders, the retries
    that are due, queued rows whose task was lost (timings: ``settings.sending``); start
    the scheduled sends that are due (composed with the rest of ``settings``)."""
    timings = settings.sending
    now = utcnow()
    report = SweepReport()
    under_way = sorted(session.scalars(
        select(Edition.id).where(Edition.state == EditionState.sending)).all())

    # Claims whose holder is gone, in every edition under way (or cancelled meanwhile).
    to_queue: dict[int, list[int]] = defaultdict(list)
    for edition_id, ids in holders.reclaim(session, timings, now=now).items():
        report.reclaimed += len(ids)
        if edition_id in under_way:
            to_queue[edition_id].extend(ids)
    holders.forget_gone(session, timings, now)

    if under_way:
        # Retries that are due.
        due = session.execute(
            select(Delivery.id, Delivery.edition_id)
            .where(Delivery.edition_id.in_(under_way), Delivery.state == D.deferred,
                   Delivery.next_attempt_at <= now)
        ).all()
        for delivery_id, edition_id in due:
            to_queue[edition_id].append(delivery_id)
        report.retried = len(due)
        for start in range(0, len(due), 5000):
            session.execute(
                update(Delivery).where(Delivery.id.in_([d for d, _ in due[start:start + 5000]]),
                                       Delivery.state == D.deferred)
                .values(state=D.queued, updated_at=now)
            )
        # Queued rows whose task is gone. Only when nothing waits in the queue: until then
        # a task for them may still come.
        if bulk_queue_empty:
            threshold = now - dt.timedelta(seconds=timings.requeue_after_seconds)
            live = holders.live_batches(session, timings, now)
            untouched = session.execute(
                select(Delivery.id, Delivery.edition_id)
                .where(Delivery.edition_id.in_(under_way), Delivery.state == D.queued,
                       Delivery.updated_at < threshold)
            ).all()
            lost = [(d, e) for d, e in untouched
                    if not any(e == le and lo <= d <= hi for le, lo, hi in live)]
            for delivery_id, edition_id in lost:
                to_queue[edition_id].append(delivery_id)
            report.requeued = len(lost)
        touched = [d for ids in to_queue.values() for d in ids]
        for start in range(0, len(touched), 5000):
            session.execute(
                update(Delivery).where(Delivery.id.in_(touched[start:start + 5000]),
                                       Delivery.state == D.queued)
                .values(updated_at=now)
            )
        for edition_id, ids in to_queue.items():
            sending.enqueue_ids(session, edition_id, ids, timings.batch_size)

    for edition_id in under_way:
        if sending.finish_if_done(session, edition_id):
            report.finished.append(edition_id)
    report.started = sending.start_due_editions(session, settings=settings)
    return report
