"""Sending one batch of deliveries: claim, send, record — one reader at a time.

For each delivery, one short transaction records the outcome of the previous message and
claims this one (``queued``/``deferred`` → ``sending``, only if the reader is still
confirmed and not suppressed); then the message goes over the process's reused SMTP
connection. A delivery is marked ``sent`` only after the server's 250. If the worker dies,
the only delivery that can have reached the server without being recorded is the one in
flight at that moment; the sweeper queues what stayed ``sending`` again, and nothing that
is recorded ``sent`` is ever queued again.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import redis
from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from mailer.bounces.actions import record_bounce
from mailer.bounces.classify import classify_reply
from mailer.bounces.models import BounceClass
from mailer.config import get_settings
from mailer.db import transaction, utcnow
from mailer.delivery import breaker
from mailer.delivery.assembly import MessageAssembler, Reader
from mailer.delivery.models import Delivery, DeliveryState
from mailer.editions.models import Edition, EditionState
from mailer.emails.transport import SMTPFailure, process_transport
from mailer.ops.counters import timed
from mailer.ratelimit import take_token
from mailer.subscribers.models import Subscriber, SubscriberStatus, Suppression

log = logging.getLogger(__name__)
D = DeliveryState
STATE_CHECK_SECONDS = 0.25


@dataclass
class BatchResult:
    counts: Counter[str] = field(default_factory=Counter)
    stopped: str = ""  # why the batch stopped early ('' when it ran to the end)
    retry_ids: list[int] = field(default_factory=list)  # not attempted: queue again later
    retry_in: float = 0.0


@dataclass
class Outcome:
    delivery_id: int
    state: DeliveryState
    code: int | None
    reply: str
    attempts: int
    label: str  # for the operators: sent, deferred, hard bounce, policy, retries exhausted
    bounce: BounceClass | None = None
    status: str = ""
    recipient: str = ""


# --- per-process edition context ------------------------------------------------------------


_assemblers: dict[tuple[int, int], MessageAssembler] = {}


def assembler_for(edition: Edition) -> MessageAssembler:
    """The edition's assembler, built once per process and snapshot."""
    from mailer.editions import snapshot

    key = (edition.id, hash(edition.html_snapshot))
    if key not in _assemblers:
        if len(_assemblers) > 8:
            _assemblers.clear()
        _assemblers[key] = MessageAssembler(
            edition_id=edition.id,
            subject=edition.subject_snapshot or edition.subject,
            personaliser=snapshot.personaliser_for(edition),
            view_url=snapshot.view_url(edition),
        )
    return _assemblers[key]


# --- the statements ---------------------------------------------------------------------------


def _reader_still_mailable() -> object:
    return exists().where(
        Subscriber.id == Delivery.subscriber_id,
        Subscriber.status == SubscriberStatus.confirmed,
        ~exists().where(Suppression.address_hash == Subscriber.address_hash),
    )


def _claim(session: Session, delivery_id: int, lease_seconds: float) -> bool:
    now = utcnow()
    claimed = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.state.in_([D.queued, D.deferred]),
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
            _reader_still_mailable(),
        )
        .values(state=D.sending, attempts=Delivery.attempts + 1, updated_at=now,
                lease_until=now + dt.timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed:
        return True
    # Not claimable: skip it if the reader left (unsubscribed, suppressed, erased) since the
    # audience froze; otherwise someone else has it, or it is final, or not due yet.
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state.in_([D.queued, D.deferred]),
               ~_reader_still_mailable())
        .values(state=D.skipped, outcome="left the list during the send", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return False


def _record(session: Session, outcome: Outcome, edition_id: int) -> None:
    now = utcnow()
    values: dict[str, object] = {
        "state": outcome.state, "smtp_code": outcome.code, "smtp_reply": outcome.reply[:2000],
        "outcome": outcome.label[:32], "updated_at": now, "lease_until": None,
    }
    if outcome.state == D.sent:
        values["sent_at"] = now
    if outcome.state == D.deferred:
        values["next_attempt_at"] = now + _backoff(outcome.attempts)
    recorded = session.execute(
        update(Delivery).where(Delivery.id == outcome.delivery_id, Delivery.state == D.sending)
        .values(**values).execution_options(synchronize_session=False)
    ).rowcount
    if recorded and outcome.bounce is not None:
        record_bounce(
            session, bounce_class=outcome.bounce, source="smtp", recipient=outcome.recipient,
            status_code=outcome.status or (str(outcome.code) if outcome.code else ""),
            diagnostic=outcome.reply, delivery_id=outcome.delivery_id, edition_id=edition_id,
            attribution="smtp", attribution_note="rejected during our own SMTP transaction",
            fingerprint=f"smtp:{outcome.delivery_id}:{outcome.attempts}",
        )


def _backoff(attempts: int) -> dt.timedelta:
    """Exponential backoff with jitter, so retries of many readers do not march in step."""
    settings = get_settings()
    delay = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** max(0, attempts - 1))
    return dt.timedelta(seconds=delay * random.uniform(0.8, 1.2))


def outcome_of_failure(failure: SMTPFailure, delivery_id: int, attempts: int,
                       recipient: str) -> Outcome:
    """What an SMTP failure means for one delivery (see the README's outcome table)."""
    klass, status = classify_reply(failure.code, failure.reply)
    reply = f"{failure.code or ''} {failure.reply}".strip()
    permanent = failure.code is not None and failure.code >= 500
    if permanent and klass == BounceClass.hard:
        return Outcome(delivery_id, D.bounced, failure.code, reply, attempts, "hard bounce",
                       BounceClass.hard, status, recipient)
    if permanent and klass == BounceClass.policy:
        return Outcome(delivery_id, D.failed, failure.code, reply, attempts, "policy rejection",
                       BounceClass.policy, status, recipient)
    if attempts < get_settings().max_attempts:
        return Outcome(delivery_id, D.deferred, failure.code, reply, attempts, "deferred")
    return Outcome(delivery_id, D.failed, failure.code, reply, attempts, "retries exhausted",
                   BounceClass.soft, status, recipient)


# --- the batch -------------------------------------------------------------------------------


def _load(session: Session, edition_id: int, ids: list[int]) -> dict[int, tuple[Reader, int]]:
    rows = session.execute(
        select(Delivery.id, Delivery.attempts, Subscriber.email, Subscriber.first_name,
               Subscriber.public_id)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.edition_id == edition_id, Delivery.id.in_(ids),
               Delivery.state.in_([D.queued, D.deferred]))
    ).all()
    return {r.id: (Reader(r.id, r.email, r.first_name, r.public_id), r.attempts) for r in rows}


def _wait_for_rate(domain: str) -> None:
    settings = get_settings()
    for key, rate in (("global", settings.rate_limit_per_second),
                      (f"domain:{domain}", settings.domain_rate_limit_per_second)):
        if rate <= 0:
            continue
        try:
            while (wait := take_token(key, rate)) > 0:
                time.sleep(wait)
        except redis.RedisError:
            time.sleep(1.0 / rate)  # Redis is away: keep to the rate within this process


def send_batch(edition_id: int, delivery_ids: list[int]) -> BatchResult:
    settings = get_settings()
    result = BatchResult()
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        if edition is None or edition.state != EditionState.sending:
            result.stopped = f"edition is {edition.state if edition else 'gone'}"
            return result
        if edition.html_snapshot is None:
            result.stopped = "edition has no snapshot"
            return result
        hold = _complaint_hold(session, edition_id)
        assembler = assembler_for(edition)
        readers = _load(session, edition_id, delivery_ids)
    if hold:
        _pause_for(edition_id, hold)
        result.stopped = hold
        return result

    transport = timed(process_transport())  # SMTP reply codes and latency for /metrics
    pending: Outcome | None = None
    next_check = 0.0
    order = sorted(readers)
    try:
        for index, delivery_id in enumerate(order):
            reader, attempts = readers[delivery_id]
            _wait_for_rate(reader.email.rsplit("@", 1)[-1].lower())
            with transaction() as session:
                if pending is not None:
                    _record(session, pending, edition_id)
                    pending = None
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + STATE_CHECK_SECONDS
                    state = session.scalar(select(Edition.state).where(Edition.id == edition_id))
                    if state != EditionState.sending:
                        result.stopped = f"edition is {state}"
                        return result
                claimed = _claim(session, delivery_id, settings.lease_seconds)
            if not claimed:
                result.counts["not claimed"] += 1
                continue
            attempts += 1
            try:
                accepted = transport.send(assembler.envelope_from(reader), reader.email,
                                          assembler.build(reader))
            except SMTPFailure as failure:
                pending = outcome_of_failure(failure, delivery_id, attempts, reader.email)
                log.info("delivery %s: %s", pending.label, pending.reply,
                         extra={"edition_id": edition_id, "delivery_id": delivery_id,
                                "smtp_code": failure.code})
                if failure.code is None or failure.code == 421:
                    # The connection is gone: the rest of the batch waits and tries later.
                    result.stopped = f"SMTP connection failed: {failure}"
                    result.retry_ids = order[index + 1:]
                    result.retry_in = settings.retry_base_seconds * random.uniform(0.5, 1.0)
                    return result
            else:
                pending = Outcome(delivery_id, D.sent, accepted.code, accepted.reply, attempts,
                                  "sent")
            result.counts[pending.label] += 1
            kind = {"sent": "ok", "hard bounce": "hard", "policy rejection": "policy"}.get(
                pending.label, "other")
            trip = breaker.note(edition_id, kind)
            if trip:
                _flush(pending, edition_id)
                pending = None
                _pause_for(edition_id, trip)
                result.stopped = trip
                return result
    finally:
        if pending is not None:
            _flush(pending, edition_id)
    return result


def _complaint_hold(session: Session, edition_id: int) -> str | None:
    """Checked once per batch: complaints arrive (ARF, webhooks) while the send goes on."""
    from mailer.delivery.service import complaint_hold

    return complaint_hold(session, edition_id=edition_id)


def _flush(outcome: Outcome, edition_id: int) -> None:
    with transaction() as session:
        _record(session, outcome, edition_id)


def _pause_for(edition_id: int, reason: str) -> None:
    from mailer.delivery.service import SendError, pause

    log.warning("pausing edition: %s", reason, extra={"edition_id": edition_id})
    try:
        with transaction() as session:
            pause(session, edition_id, by="circuit breaker", reason=reason)
    except SendError:
        pass  # already paused or cancelled by someone else
