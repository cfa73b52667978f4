"""The sweeper (run by beat): puts back to work what a dead worker or a lost Redis message
left behind, finishes editions whose deliveries are all final, and starts scheduled sends.

- ``sending`` past its lease: the worker holding it died. Queued again (or cancelled, if
  the edition was). At most this one message can be a duplicate: it may have reached the
  SMTP server before the worker died.
- ``deferred`` and due: queued for its retry.
- ``queued`` and untouched for ``requeue_after_seconds`` while the bulk queue is empty:
  its Celery message was lost (a Redis restart). Queued again; if the message was not lost
  after all, the second task finds nothing to claim.
- ``sent`` is never queued again.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.config import get_settings
from mailer.db import utcnow
from mailer.delivery import service
from mailer.delivery.models import Delivery, DeliveryState
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


def sweep(session: Session, *, bulk_queue_empty: bool) -> SweepReport:
    settings = get_settings()
    now = utcnow()
    report = SweepReport()
    sending = set(session.scalars(
        select(Edition.id).where(Edition.state == EditionState.sending)).all())
    cancelled = set(session.scalars(
        select(Edition.id).where(Edition.state == EditionState.cancelled)).all())

    # A claim whose lease ran out: its worker is gone.
    stale = session.execute(
        select(Delivery.id, Delivery.edition_id)
        .where(Delivery.state == D.sending, Delivery.lease_until < now)
    ).all()
    for delivery_id, edition_id in stale:
        to = D.cancelled if edition_id in cancelled else D.queued
        why = "edition cancelled" if to == D.cancelled else "worker lost; queued again"
        session.execute(
            update(Delivery).where(Delivery.id == delivery_id, Delivery.state == D.sending,
                                   Delivery.lease_until < now)
            .values(state=to, lease_until=None, updated_at=now, outcome=why)
        )
    report.reclaimed = len(stale)

    to_queue: dict[int, list[int]] = defaultdict(list)
    if sending:
        # Retries that are due.
        due = session.execute(
            select(Delivery.id, Delivery.edition_id)
            .where(Delivery.edition_id.in_(sending), Delivery.state == D.deferred,
                   Delivery.next_attempt_at <= now)
        ).all()
        for delivery_id, edition_id in due:
            to_queue[edition_id].append(delivery_id)
        report.retried = len(due)
        if due:
            session.execute(
                update(Delivery).where(Delivery.id.in_([d for d, _ in due]),
                                       Delivery.state == D.deferred)
                .values(state=D.queued, updated_at=now)
            )
        # Queued rows whose task is gone (or that a dead worker's claim just released).
        threshold = now - dt.timedelta(seconds=settings.requeue_after_seconds)
        released = {d for d, e in stale if e in sending}
        lost = session.execute(
            select(Delivery.id, Delivery.edition_id)
            .where(Delivery.edition_id.in_(sending), Delivery.state == D.queued,
                   Delivery.updated_at < threshold)
        ).all() if bulk_queue_empty else []
        for delivery_id, edition_id in lost:
            to_queue[edition_id].append(delivery_id)
        for delivery_id, edition_id in stale:
            if delivery_id in released:
                to_queue[edition_id].append(delivery_id)
        report.requeued = len(lost) + len(released)
        touched = [d for ids in to_queue.values() for d in ids]
        for start in range(0, len(touched), 5000):
            session.execute(
                update(Delivery).where(Delivery.id.in_(touched[start:start + 5000]),
                                       Delivery.state == D.queued)
                .values(updated_at=now)
            )
        for edition_id, ids in to_queue.items():
            service.enqueue_ids(session, edition_id, sorted(set(ids)))

    for edition_id in sorted(sending):
        if service.finish_if_done(session, edition_id):
            report.finished.append(edition_id)
    report.started = service.start_due_editions(session)
    return report
