"""Sending one batch: claim a group, send each message, record the group.

A batch is a range of delivery ids of one edition (``workers.bulk.send_batch``). The worker
process claims the range's queued deliveries ``MAILER_COMMIT_EVERY`` (20) at a time:
``queued`` → ``sending``, naming itself as their holder, but only if the reader is still
confirmed and not suppressed at that instant (the others become ``skipped``). It sends them
one by one over its reused SMTP connection, and records their outcomes in one transaction
every ``MAILER_COMMIT_EVERY`` messages or ``MAILER_COMMIT_EVERY_MS`` (200) milliseconds,
whichever comes first; the same transaction reads the edition's state (pause and cancel
act within a group) and claims the next group. A delivery is recorded ``sent`` only after
the server's 250.

What a crash can repeat: the messages this process sent since its last commit, at most
``MAILER_COMMIT_EVERY``. Their rows are still ``sending`` under a holder that is gone:
the batch Celery hands out again finds that at once and queues them again; the sweeper
does when the holder's heartbeat has stopped (``mailer.delivery.holders``). Claimed rows
not yet attempted go out once, later. Nothing recorded ``sent`` is ever queued again.

When the SMTP connection itself fails (no answer, 421), the batch stops: the rest of its
range is ``deferred`` with a time to try again, which the sweeper owns — no Celery
countdown holds it in Redis.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.bounces.classify import classify_reply
from mailer.bounces.models import BounceClass
from mailer.config import BounceSettings, SendingSettings, Settings
from mailer.counters import timed
from mailer.db import transaction, utcnow
from mailer.deliveries.models import DeliveryState
from mailer.delivery import breaker, holders
from mailer.delivery.assembly import MessageAssembler
from mailer.delivery.ledger import Claimed, ClaimsLost, Ledger, Outcome
from mailer.delivery.service import SendError, complaint_hold, pause
from mailer.editions.models import Edition, EditionState, EditionVariant
from mailer.emails.transport import SMTPFailure, SMTPTransport, process_transport
from mailer.ratelimit import LocalTokens

log = logging.getLogger(__name__)
D = DeliveryState
BREAKER_CHECK_SECONDS = 0.25


@dataclass
class BatchResult:
    counts: Counter[str] = field(default_factory=Counter)
    stopped: str = ""  # why the batch stopped early ('' when it ran to the end)


# --- per-process edition context ------------------------------------------------------------


#: (edition, snapshot, variant) → its assembler; the least recently used go first.
_assemblers: OrderedDict[tuple[int, int, int], MessageAssembler] = OrderedDict()
#: An edition of 8 topics has at most 255 variants; one assembler holds ~100 KB.
ASSEMBLERS_KEPT = 300


def _assembler(edition: Edition, settings: Settings, variant: EditionVariant | None = None
               ) -> MessageAssembler:
    from mailer.editions import snapshot

    if variant is None:
        personaliser = snapshot.personaliser_for(edition, settings.base_url)
        subject = edition.subject_snapshot or edition.subject
    else:
        personaliser = snapshot.variant_personaliser(edition, variant, settings.base_url)
        subject = variant.subject_snapshot
    return MessageAssembler(
        edition_id=edition.id,
        subject=subject,
        personaliser=personaliser,
        view_url=snapshot.view_url(edition, settings.base_url),
        base_url=settings.base_url,
        identity=snapshot.list_settings(edition, settings).identity,
        keys=settings.all_secrets,
        smtp=settings.smtp,
    )


def _remember(key: tuple[int, int, int], assembler: MessageAssembler) -> MessageAssembler:
    _assemblers[key] = assembler
    while len(_assemblers) > ASSEMBLERS_KEPT:
        _assemblers.popitem(last=False)
    return assembler


def assembler_for(edition: Edition, settings: Settings) -> MessageAssembler:
    """The whole edition's assembler, built once per process and snapshot."""
    key = (edition.id, hash(edition.html_snapshot), 0)
    if key in _assemblers:
        _assemblers.move_to_end(key)
        return _assemblers[key]
    return _remember(key, _assembler(edition, settings))


class EditionAssemblers:
    """A batch's assemblers: the whole edition's, and each variant's (topics) once a claim
    names it: the variants a group needs that this process has not built yet are read in
    one query, each built once per process and snapshot."""

    def __init__(self, edition: Edition, settings: Settings) -> None:
        self.edition_id = edition.id
        self.snapshot = hash(edition.html_snapshot)
        self.settings = settings
        self.whole = assembler_for(edition, settings)

    def __getitem__(self, variant: int) -> MessageAssembler:
        if not variant:
            return self.whole
        return _assemblers[(self.edition_id, self.snapshot, variant)]

    def load(self, wanted: Iterable[int]) -> None:
        """Build the assemblers of these variants that this process lacks."""
        missing = {v for v in wanted if v and (self.edition_id, self.snapshot, v)
                   not in _assemblers}
        for v in wanted:
            key = (self.edition_id, self.snapshot, v)
            if v and key in _assemblers:
                _assemblers.move_to_end(key)
        if not missing:
            return
        with transaction() as session:
            edition = session.get(Edition, self.edition_id)
            if edition is None:
                raise SendError(f"there is no edition {self.edition_id}")
            for variant in session.scalars(select(EditionVariant).where(
                    EditionVariant.edition_id == self.edition_id,
                    EditionVariant.number.in_(sorted(missing)))):
                _remember((self.edition_id, self.snapshot, variant.number),
                          _assembler(edition, self.settings, variant))
        lacking = [v for v in missing if (self.edition_id, self.snapshot, v) not in _assemblers]
        if lacking:
            raise SendError(f"edition {self.edition_id} has no variant {lacking[0]}")


def outcome_of_failure(failure: SMTPFailure, delivery_id: int, attempts: int, max_attempts: int,
                       recipient: str) -> Outcome:
    """What an SMTP failure means for one delivery (see the README's outcome table)."""
    klass, status = classify_reply(failure.code, failure.reply)
    reply = f"{failure.code or ''} {failure.reply}".strip()
    permanent = failure.code is not None and failure.code >= 500
    now = utcnow()
    if permanent and klass == BounceClass.hard:
        return Outcome(delivery_id, D.bounced, failure.code, reply, attempts, "hard bounce", now,
                       BounceClass.hard, status, recipient)
    if permanent and klass == BounceClass.policy:
        return Outcome(delivery_id, D.failed, failure.code, reply, attempts, "policy rejection",
                       now, BounceClass.policy, status, recipient)
    if attempts < max_attempts:
        return Outcome(delivery_id, D.deferred, failure.code, reply, attempts, "deferred", now)
    return Outcome(delivery_id, D.failed, failure.code, reply, attempts, "retries exhausted", now,
                   BounceClass.soft, status, recipient)


_tokens = LocalTokens()


def _reserve_rate(claims: list[Claimed], sending: SendingSettings) -> None:
    """The tokens a group of claims needs, from the shared buckets in one Redis call (one
    call per message cost more CPU than the rest of the send's Redis traffic together)."""
    wanted: dict[str, tuple[float, int]] = {}
    if sending.rate_limit_per_second > 0:
        wanted["global"] = (sending.rate_limit_per_second, len(claims))
    if sending.domain_rate_limit_per_second > 0:
        domains = Counter(c.reader.email.rsplit("@", 1)[-1].lower() for c in claims)
        for domain, n in domains.items():
            wanted[f"domain:{domain}"] = (sending.domain_rate_limit_per_second, n)
    # Redis away: each message waits on its own (and keeps to the rate in-process).
    with contextlib.suppress(redis.RedisError):
        _tokens.reserve(wanted)


def _wait_for_rate(domain: str, sending: SendingSettings) -> None:
    for key, rate in (("global", sending.rate_limit_per_second),
                      (f"domain:{domain}", sending.domain_rate_limit_per_second)):
        try:
            _tokens.wait(key, rate)
        except redis.RedisError:
            time.sleep(1.0 / rate)  # Redis is away: keep to the rate within this process


# --- the batch -------------------------------------------------------------------------------


def send_batch(edition_id: int, first_id: int, last_id: int, settings: Settings) -> BatchResult:
    """Send the queued deliveries of ``edition_id`` with ids in [first_id, last_id]:
    ``settings.sending`` paces them, ``smtp`` and ``identity`` make and carry them."""
    result = BatchResult()
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        if edition is None or edition.state != EditionState.sending:
            result.stopped = f"edition is {edition.state if edition else 'gone'}"
            return result
        if edition.html_snapshot is None:
            result.stopped = "edition has no snapshot"
            return result
        hold = _complaint_hold(session, edition_id, settings.sending)
        assemblers = EditionAssemblers(edition, settings)
        # A batch handed out again after its process died: that process's claims in this
        # range go back to the queue now, not when a heartbeat times out.
        holders.reclaim(session, settings.sending, edition_ids=[edition_id], first_id=first_id,
                        last_id=last_id)
    if hold:
        _pause_for(edition_id, hold)
        result.stopped = hold
        return result
    holders.me.working_on(settings.sending, edition_id, first_id, last_id)
    try:
        transport = process_transport(settings.smtp)
        _Batch(edition_id, first_id, last_id, assemblers, result, settings.sending,
               settings.bounces, transport).run()
    finally:
        holders.me.working_on(settings.sending, None)
    return result


class _Batch:
    def __init__(self, edition_id: int, first_id: int, last_id: int,
                 assemblers: EditionAssemblers, result: BatchResult, sending: SendingSettings,
                 bounces: BounceSettings, transport: SMTPTransport) -> None:
        self.edition_id, self.last_id = edition_id, last_id
        self.sending = sending
        self.after = first_id - 1  # the claims so far reach up to here
        self.assemblers, self.result = assemblers, result
        self.every = max(1, sending.commit_every)
        self.every_seconds = max(0.0, sending.commit_every_ms / 1000)
        self.transport = timed(transport)  # SMTP reply codes and latency
        self.ledger = Ledger(edition_id, holders.me.holder_id(sending), sending, bounces)
        self.tally = breaker.Tally(edition_id, sending)
        self.pending: list[Outcome] = []  # sent or failed, not recorded yet
        self.claims: list[Claimed] = []  # claimed, not attempted yet
        self.debug = log.isEnabledFor(logging.DEBUG)

    def run(self) -> None:
        try:
            self._loop()
        except ClaimsLost as exc:  # declared gone while alive: stop, touch nothing more
            log.warning("batch stopped: %s", exc, extra={"edition_id": self.edition_id})
            self.result.stopped = str(exc)
            self.pending, self.claims = [], []
        finally:
            try:
                self._finish()
            finally:
                # A message begun ahead that will not be sent (stopped, paused, cancelled,
                # an error): hang up rather than let it go out.
                self.transport.abandon_ahead()
                self.ledger.close()

    def _loop(self) -> None:
        if not self._commit(claim=True):
            return
        last_commit = next_breaker = time.monotonic()
        while self.claims:
            claim = self.claims.pop(0)
            _wait_for_rate(claim.reader.email.rsplit("@", 1)[-1].lower(), self.sending)
            # The next claim of the group goes out next (pause and cancel act between
            # groups): its envelope can go with this message's content.
            outcome = self._send(claim, self.claims[0] if self.claims else None)
            self.pending.append(outcome)
            self.result.counts[outcome.label] += 1
            self.tally.add(outcome.label)
            if outcome.code is None or outcome.code == 421:
                # The connection is gone: the rest of the batch waits and tries later.
                self.result.stopped = f"SMTP connection failed: {outcome.reply}"
                self._defer_the_rest(outcome.reply)
                return
            now = time.monotonic()
            if now >= next_breaker:
                next_breaker = now + BREAKER_CHECK_SECONDS
                trip = self.tally.flush()
                if trip:
                    _pause_for(self.edition_id, trip)
            if not self.claims or len(self.pending) >= self.every or (
                    now - last_commit >= self.every_seconds):
                last_commit = now
                if not self._commit(claim=not self.claims):
                    return

    def _send(self, claim: Claimed, then: Claimed | None = None) -> Outcome:
        reader = claim.reader
        assembler = self.assemblers[reader.variant]
        # (The envelope is the same whatever the variant: any assembler of the edition's.)
        ahead = None if then is None else (assembler.envelope_from(then.reader),
                                           then.reader.email)
        try:
            accepted = self.transport.send(assembler.envelope_from(reader), reader.email,
                                           assembler.build(reader), ahead)
        except SMTPFailure as failure:
            outcome = outcome_of_failure(failure, reader.delivery_id, claim.attempts,
                                         self.sending.max_attempts, reader.email)
            log.info("delivery %s: %s", outcome.label, outcome.reply,
                     extra={"edition_id": self.edition_id, "delivery_id": reader.delivery_id,
                            "smtp_code": failure.code})
            return outcome
        if self.debug:
            log.debug("delivery sent: %s", accepted.reply,
                      extra={"edition_id": self.edition_id, "delivery_id": reader.delivery_id,
                             "smtp_code": accepted.code})
        return Outcome(reader.delivery_id, D.sent, accepted.code, accepted.reply, claim.attempts,
                       "sent", utcnow())

    def _commit(self, *, claim: bool) -> bool:
        """Record what is pending; claim the next group if asked. False: stop the batch."""
        outcomes, self.pending = self.pending, []
        state, claimed, skipped = self.ledger.commit_group(
            outcomes, claim_after=self.after if claim else None, last_id=self.last_id,
            limit=self.every, now=utcnow())
        if skipped:
            self.result.counts["skipped"] += skipped
        if state != EditionState.sending:
            self.result.stopped = f"edition is {state}"
            self._give_back(state)
            return False
        if claim:
            self.claims, self.after = claimed
            if self.claims:
                self.assemblers.load({c.reader.variant for c in self.claims})
                _reserve_rate(self.claims, self.sending)
        return True

    def _give_back(self, state: str) -> None:
        """Paused or cancelled: the claims not attempted go back (cancel() sees them)."""
        self.transport.abandon_ahead()
        ids = [c.reader.delivery_id for c in self.claims]
        self.claims = []
        cancelled = state == EditionState.cancelled
        self.ledger.release(ids, to=D.cancelled if cancelled else D.queued, now=utcnow(),
                            outcome="edition cancelled" if cancelled else None)

    def _defer_the_rest(self, why: str) -> None:
        self.transport.abandon_ahead()
        now = utcnow()
        base = self.sending.retry_base_seconds
        wait = dt.timedelta(seconds=base * random.uniform(0.5, 1.0))
        self._commit(claim=False)
        ids = [c.reader.delivery_id for c in self.claims]
        self.claims = []
        outcome = "waiting: SMTP connection failed"
        self.ledger.release(ids, to=D.deferred, now=now, next_at=now + wait, outcome=outcome)
        self.ledger.defer_rest(self.after, self.last_id, next_at=now + wait, outcome=outcome,
                               now=now)
        log.info("batch waits %.0f s: %s", wait.total_seconds(), why,
                 extra={"edition_id": self.edition_id})

    def _finish(self) -> None:
        try:
            if self.pending:
                self._commit(claim=False)
        except ClaimsLost as exc:
            log.warning("batch stopped: %s", exc, extra={"edition_id": self.edition_id})
            self.claims = []
        if self.claims:  # stopped early with claims in hand (an error): give them back
            self.ledger.release([c.reader.delivery_id for c in self.claims], to=D.queued,
                                now=utcnow())
            self.claims = []
        trip = self.tally.flush()
        if trip:
            _pause_for(self.edition_id, trip)
            self.result.stopped = self.result.stopped or trip


_holds: dict[int, tuple[float, str | None]] = {}
HOLD_CHECK_SECONDS = 5.0


def _complaint_hold(session: Session, edition_id: int, sending: SendingSettings) -> str | None:
    """Checked at the start of a batch, at most every few seconds per process: complaints
    arrive (ARF, webhooks) while the send goes on, and counting an edition that has some is
    a count over its deliveries."""
    checked = _holds.get(edition_id)
    if checked is not None and time.monotonic() - checked[0] < HOLD_CHECK_SECONDS:
        return checked[1]
    hold = complaint_hold(session, sending=sending, edition_id=edition_id)
    _holds[edition_id] = (time.monotonic(), hold)
    return hold


def _pause_for(edition_id: int, reason: str) -> None:
    log.warning("pausing edition: %s", reason, extra={"edition_id": edition_id})
    try:
        with transaction() as session:
            pause(session, edition_id, by="circuit breaker", reason=reason)
    except SendError:
        pass  # already paused or cancelled by someone else
