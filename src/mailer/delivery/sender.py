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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis
from sqlalchemy import Table, bindparam, exists, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from mailer.bounces.actions import record_bounce
from mailer.bounces.classify import classify_reply
from mailer.bounces.models import BounceClass
from mailer.config import get_settings
from mailer.db import (
    UTCDateTime,
    get_engine,
    run_after_commit,
    take_after_commit,
    transaction,
    utcnow,
)
from mailer.delivery import breaker
from mailer.delivery.assembly import MessageAssembler, Reader
from mailer.delivery.models import Delivery, DeliveryState
from mailer.editions.models import Edition, EditionState
from mailer.emails.transport import SMTPFailure, process_transport
from mailer.ops.counters import timed
from mailer.ratelimit import LocalTokens
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
# Built once: the hot path runs them with new parameters, not new statement objects.

_delivery = cast(Table, Delivery.__table__)
_subscriber = cast(Table, Subscriber.__table__)
_suppression = cast(Table, Suppression.__table__)

_MAILABLE = exists().where(
    _subscriber.c.id == _delivery.c.subscriber_id,
    _subscriber.c.status == SubscriberStatus.confirmed.value,
    ~exists().where(_suppression.c.address_hash == _subscriber.c.address_hash),
)
_WAITING = _delivery.c.state.in_([D.queued.value, D.deferred.value])

#: queued/deferred → sending, if due and the reader is still confirmed and unsuppressed.
CLAIM = (
    update(_delivery)
    .where(_delivery.c.id == bindparam("claim_id"), _WAITING,
           or_(_delivery.c.next_attempt_at.is_(None),
               _delivery.c.next_attempt_at <= bindparam("now", type_=UTCDateTime())),
           _MAILABLE)
    .values(state=D.sending.value, attempts=_delivery.c.attempts + 1,
            updated_at=bindparam("now", type_=UTCDateTime()),
            lease_until=bindparam("lease_until", type_=UTCDateTime()))
)
#: A reader who left (unsubscribed, suppressed, erased) since the audience froze.
SKIP = (
    update(_delivery)
    .where(_delivery.c.id == bindparam("claim_id"), _WAITING, ~_MAILABLE)
    .values(state=D.skipped.value, outcome="left the list during the send",
            updated_at=bindparam("now", type_=UTCDateTime()))
)
#: sending → the outcome; only the claim's holder can still find it ``sending``.
RECORD = (
    update(_delivery)
    .where(_delivery.c.id == bindparam("done_id"), _delivery.c.state == D.sending.value)
    .values(state=bindparam("done_state"), smtp_code=bindparam("done_code"),
            smtp_reply=bindparam("done_reply"), outcome=bindparam("done_outcome"),
            updated_at=bindparam("now", type_=UTCDateTime()), lease_until=None,
            sent_at=bindparam("done_sent_at", type_=UTCDateTime()),
            next_attempt_at=bindparam("done_next_at", type_=UTCDateTime()))
)
EDITION_STATE = select(Edition.__table__.c.state).where(
    Edition.__table__.c.id == bindparam("the_edition"))

#: PostgreSQL only: record the previous outcome and claim the next delivery (only while the
#: edition is sending) in ONE statement, committed on its own: one round trip per reader.
_RECORDED = RECORD.returning(_delivery.c.id).cte("recorded")
STEP = (
    CLAIM.where(EDITION_STATE.scalar_subquery() == EditionState.sending.value)
    .add_cte(_RECORDED)
    .returning(_delivery.c.id,
               select(func.count()).select_from(_RECORDED).scalar_subquery().label("recorded"))
)


class Ledger:
    """The database side of a batch: one short transaction per reader records the previous
    outcome and claims the next delivery. Core statements on one connection: the ORM's
    per-statement overhead was most of the cost of a message."""

    def __init__(self, edition_id: int, lease_seconds: float) -> None:
        self.edition_id = edition_id
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.conn: Connection | None = None
        self.quick: Connection | None = None  # PostgreSQL: autocommit, one statement per reader
        self.fast = False

    def close(self) -> None:
        for conn in (self.conn, self.quick):
            if conn is not None:
                conn.close()
        self.conn = self.quick = None

    def step(self, outcome: Outcome | None, claim_id: int | None,
             check_state: bool) -> tuple[bool, str | None]:
        """Record ``outcome``, read the edition's state if asked, claim ``claim_id``.

        Returns (claimed, the edition's state or None when not read). When the edition is
        no longer sending, nothing is claimed."""
        if self.conn is None:  # one connection for the whole batch: no pool round trips
            self.conn = get_engine().connect()
            self.fast = self.conn.dialect.name == "postgresql"
            if self.fast:
                self.quick = get_engine().connect().execution_options(isolation_level="AUTOCOMMIT")
        now = utcnow()
        if self.fast and claim_id is not None and (outcome is None or outcome.bounce is None):
            params = {"claim_id": claim_id, "now": now, "lease_until": now + self.lease,
                      "the_edition": self.edition_id, **self._outcome_params(outcome, now)}
            assert self.quick is not None
            claimed = self.quick.execute(STEP, params).first() is not None
            self.quick.commit()  # ends SQLAlchemy's transaction object; the server autocommitted
            if claimed:
                return True, None
            outcome = None  # recorded by STEP; now find out why nothing was claimed
            check_state = True
        return self._step(outcome, claim_id, check_state, now)

    def _step(self, outcome: Outcome | None, claim_id: int | None, check_state: bool,
              now: dt.datetime) -> tuple[bool, str | None]:
        assert self.conn is not None
        conn = self.conn
        callbacks: list[Callable[[], object]] = []
        with conn.begin():
            result = self._in_transaction(conn, outcome, claim_id, check_state, now, callbacks)
        run_after_commit(callbacks)  # e.g. the operators' alert of a policy bounce
        return result

    def _in_transaction(self, conn: Connection, outcome: Outcome | None, claim_id: int | None,
                        check_state: bool, now: dt.datetime,
                        callbacks: list[Callable[[], object]]) -> tuple[bool, str | None]:
        if outcome is not None:
            callbacks.extend(self._record(conn, outcome, now))
        state = None
        if check_state:
            state = conn.execute(EDITION_STATE, {"the_edition": self.edition_id}).scalar()
            if state != EditionState.sending:
                return False, state
        if claim_id is None:
            return False, state
        params = {"claim_id": claim_id, "now": now, "lease_until": now + self.lease}
        if conn.execute(CLAIM, params).rowcount:
            return True, state
        conn.execute(SKIP, params)
        return False, state

    @staticmethod
    def _outcome_params(outcome: Outcome | None, now: dt.datetime) -> dict[str, object]:
        if outcome is None:  # nothing to record: the statement's record part matches no row
            return {"done_id": None, "done_state": None, "done_code": None, "done_reply": None,
                    "done_outcome": None, "done_sent_at": None, "done_next_at": None}
        deferred = outcome.state == D.deferred
        return {
            "done_id": outcome.delivery_id, "done_state": outcome.state.value,
            "done_code": outcome.code, "done_reply": outcome.reply[:2000],
            "done_outcome": outcome.label[:32],
            "done_sent_at": now if outcome.state == D.sent else None,
            "done_next_at": now + _backoff(outcome.attempts) if deferred else None,
        }

    def _record(self, conn: Connection, outcome: Outcome,
                now: dt.datetime) -> list[Callable[[], object]]:
        recorded = conn.execute(RECORD, {"now": now, **self._outcome_params(outcome, now)}).rowcount
        if recorded and outcome.bounce is not None:
            with Session(bind=conn) as session:  # the same transaction
                record_bounce(
                    session, bounce_class=outcome.bounce, source="smtp",
                    recipient=outcome.recipient,
                    status_code=outcome.status or (str(outcome.code) if outcome.code else ""),
                    diagnostic=outcome.reply, delivery_id=outcome.delivery_id,
                    edition_id=self.edition_id, attribution="smtp",
                    attribution_note="rejected during our own SMTP transaction",
                    fingerprint=f"smtp:{outcome.delivery_id}:{outcome.attempts}",
                )
                session.flush()
                return take_after_commit(session)
        return []


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


_tokens = LocalTokens()


def _wait_for_rate(domain: str) -> None:
    settings = get_settings()
    for key, rate in (("global", settings.rate_limit_per_second),
                      (f"domain:{domain}", settings.domain_rate_limit_per_second)):
        try:
            _tokens.wait(key, rate)
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
    ledger = Ledger(edition_id, settings.lease_seconds)
    tally = breaker.Tally(edition_id)
    pending: Outcome | None = None
    next_check = 0.0
    order = sorted(readers)
    try:
        for index, delivery_id in enumerate(order):
            reader, attempts = readers[delivery_id]
            _wait_for_rate(reader.email.rsplit("@", 1)[-1].lower())
            check = time.monotonic() >= next_check
            if check:
                next_check = time.monotonic() + STATE_CHECK_SECONDS
                trip = tally.flush()
                if trip:
                    _pause_for(edition_id, trip)
            claimed, state = ledger.step(pending, delivery_id, check)
            pending = None
            if state is not None and state != EditionState.sending:
                result.stopped = f"edition is {state}"
                return result
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
                    result.counts[pending.label] += 1
                    result.stopped = f"SMTP connection failed: {failure}"
                    result.retry_ids = order[index + 1:]
                    result.retry_in = settings.retry_base_seconds * random.uniform(0.5, 1.0)
                    return result
            else:
                pending = Outcome(delivery_id, D.sent, accepted.code, accepted.reply, attempts,
                                  "sent")
                log.info("delivery sent: %s", accepted.reply,
                         extra={"edition_id": edition_id, "delivery_id": delivery_id,
                                "smtp_code": accepted.code})
            result.counts[pending.label] += 1
            tally.add(pending.label)
    finally:
        if pending is not None:
            ledger.step(pending, None, False)
        ledger.close()
        trip = tally.flush()
        if trip:
            _pause_for(edition_id, trip)
            result.stopped = result.stopped or trip
    return result


def _complaint_hold(session: Session, edition_id: int) -> str | None:
    """Checked once per batch: complaints arrive (ARF, webhooks) while the send goes on."""
    from mailer.delivery.service import complaint_hold

    return complaint_hold(session, edition_id=edition_id)


def _pause_for(edition_id: int, reason: str) -> None:
    from mailer.delivery.service import SendError, pause

    log.warning("pausing edition: %s", reason, extra={"edition_id": edition_id})
    try:
        with transaction() as session:
            pause(session, edition_id, by="circuit breaker", reason=reason)
    except SendError:
        pass  # already paused or cancelled by someone else
