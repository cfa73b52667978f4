"""Acting on a classified bounce: record it with its evidence, then do the one right thing.

- hard: suppress the address at once;
- complaint: unsubscribe and suppress at once;
- soft: count; ``soft_bounce_limit`` soft bounces on distinct editions within
  ``soft_bounce_days`` with no successful delivery between them suppress;
- policy: never suppress (the sender's problem) — the operators' alert counter goes up;
- delayed, autoreply, not-a-bounce, unparsed: kept as evidence, nothing else.

Every source (the SMTP replies of a send, DSN mails, ARF reports, provider webhooks)
comes through :func:`record_bounce`, so the rules live in one place. Only a bounce tied to
a known subscriber acts: an unattributed one (a forged VERP token, a stranger's address)
is kept and suppresses nobody. Suppressing writes a consent event (``suppressed``).
"""

from __future__ import annotations

import datetime as dt
import logging

import redis
from sqlalchemy import distinct, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.bounces.models import Bounce, BounceClass
from mailer.config import get_settings
from mailer.db import publish_after_commit, utcnow
from mailer.delivery.models import Delivery, DeliveryState
from mailer.redis import get_redis
from mailer.subscribers import service as subscribers
from mailer.subscribers.models import Subscriber, SuppressionReason

log = logging.getLogger(__name__)

EXCERPT_LIMIT = 8 * 1024

#: Redis counters the operators' alerts read (see :func:`alert_counts`).
ALERT_KEY = "mailer:alerts"

#: Bounce classes that mean "this delivery did not reach the reader".
NOT_DELIVERED = (BounceClass.soft, BounceClass.hard, BounceClass.policy)


def record_bounce(
    session: Session,
    *,
    bounce_class: BounceClass,
    source: str,
    recipient: str = "",
    status_code: str = "",
    diagnostic: str = "",
    remote_mta: str = "",
    delivery_id: int | None = None,
    edition_id: int | None = None,
    subscriber_id: int | None = None,
    attribution: str = "none",
    attribution_note: str = "",
    raw_excerpt: str = "",
    fingerprint: str | None = None,
) -> Bounce | None:
    """Store a bounce and apply its consequence; ``bounce.action`` says what was done.

    Returns None when this exact bounce (same fingerprint and recipient) was recorded
    before — a re-import, a redelivered task, a provider's retry — and then does nothing.
    Callers that may run twice must pass a fingerprint (a bounce without one is never
    taken for a repeat). The caller owns the transaction.
    """
    if delivery_id is not None and (edition_id is None or subscriber_id is None):
        delivery = session.get(Delivery, delivery_id)
        if delivery is not None:
            edition_id = edition_id or delivery.edition_id
            subscriber_id = subscriber_id or delivery.subscriber_id
    bounce = Bounce(
        source=_text(source, 32), bounce_class=bounce_class,
        recipient=_text(recipient.strip(), 320), status_code=_text(status_code, 16),
        diagnostic=_text(diagnostic, 2000), remote_mta=_text(remote_mta, 255),
        delivery_id=delivery_id, edition_id=edition_id, subscriber_id=subscriber_id,
        attribution=_text(attribution, 16), attribution_note=_text(attribution_note, 1000),
        raw_excerpt=_text(raw_excerpt, EXCERPT_LIMIT), fingerprint=fingerprint,
    )
    try:
        with session.begin_nested():
            session.add(bounce)
            session.flush()
    except IntegrityError:
        return None
    bounce.action = _act(session, bounce)[:32]
    return bounce


def _text(value: str, limit: int) -> str:
    """Bounded, and without NUL characters (PostgreSQL refuses them in text; hostile and
    broken bounces carry them)."""
    return value[:limit].replace("\x00", "\ufffd")


def _act(session: Session, bounce: Bounce) -> str:
    if bounce.bounce_class not in (BounceClass.hard, BounceClass.soft, BounceClass.complaint,
                                   BounceClass.policy):
        return "nothing"
    if bounce.subscriber_id is None and bounce.edition_id is None:
        # Backscatter of spam that forged our domain is full of "5.7.1 spam" rejections:
        # only a bounce of a message we really sent may act or alert.
        return "nothing: not attributed"
    if bounce.bounce_class == BounceClass.policy:
        # The sender's problem, not the reader's: alert the operators, suppress nobody.
        _raise_alert(session, "policy_rejections", bounce.edition_id)
        return "alerted: policy rejection"
    if bounce.subscriber_id is None:
        return "nothing: not attributed"
    subscriber = session.get(Subscriber, bounce.subscriber_id)
    if subscriber is None:
        return "nothing: subscriber erased"
    evidence = (f"bounce #{bounce.id} via {bounce.source}: "
                f"{bounce.status_code} {bounce.diagnostic}").strip()[:1000]
    if bounce.bounce_class == BounceClass.hard:
        done = subscribers.suppress(session, subscriber.address_hash,
                                    reason=SuppressionReason.hard_bounce, evidence=evidence)
        return "suppressed" if done else "already suppressed"
    if bounce.bounce_class == BounceClass.complaint:
        subscribers.unsubscribe(session, subscriber, channel="complaint")
        subscribers.suppress(session, subscriber.address_hash,
                             reason=SuppressionReason.complaint, evidence=evidence)
        _raise_alert(session, "complaints", bounce.edition_id)
        return "unsubscribed and suppressed"
    count = soft_bounce_count(session, subscriber.id)
    limit = get_settings().soft_bounce_limit
    if count >= limit:
        done = subscribers.suppress(
            session, subscriber.address_hash, reason=SuppressionReason.soft_bounces,
            evidence=f"{count} soft bounces on distinct editions; last: {evidence}")
        return "suppressed" if done else "already suppressed"
    return f"counted: {count} of {limit} soft"


def soft_bounce_count(session: Session, subscriber_id: int) -> int:
    """Soft bounces on distinct editions within the window, since the last good delivery.

    A good delivery is one the server accepted (state sent) that no soft, hard or policy
    bounce came back for. A soft bounce tied to no edition (a confirmation mail, a
    provider event naming only the address) counts as a send of its own.
    """
    settings = get_settings()
    since = utcnow() - dt.timedelta(days=settings.soft_bounce_days)
    bounced = exists().where(
        Bounce.delivery_id == Delivery.id, Bounce.bounce_class.in_(NOT_DELIVERED)
    )
    last_good = session.scalar(
        select(func.max(Delivery.sent_at)).where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.state == DeliveryState.sent,
            ~bounced,
        )
    )
    if last_good is not None and last_good > since:
        since = last_good
    return int(session.scalar(
        select(func.count(distinct(func.coalesce(Bounce.edition_id, -Bounce.id)))).where(
            Bounce.subscriber_id == subscriber_id,
            Bounce.bounce_class == BounceClass.soft,
            Bounce.received_at > since,
        )
    ) or 0)


# --- the operators' alert counters -----------------------------------------------------------


def _raise_alert(session: Session, name: str, edition_id: int | None) -> None:
    """Count an alert in Redis once the transaction has committed (a rollback counts nothing;
    a repeat never gets here, record_bounce stops it first)."""

    def bump() -> None:
        try:
            pipe = get_redis().pipeline()
            pipe.hincrby(ALERT_KEY, name, 1)
            if edition_id is not None:
                pipe.hincrby(f"{ALERT_KEY}:edition:{edition_id}", name, 1)
            pipe.execute()
        except redis.RedisError as exc:  # the database still holds every bounce
            log.warning("could not count the alert %s: %s", name, exc)

    log.warning("bounce alert: %s", name, extra={"edition_id": edition_id})
    publish_after_commit(session, bump)


def alert_counts(edition_id: int | None = None) -> dict[str, int]:
    """The alert counters (policy_rejections, complaints), overall or for one edition."""
    key = ALERT_KEY if edition_id is None else f"{ALERT_KEY}:edition:{edition_id}"
    raw: dict[bytes, bytes] = get_redis().hgetall(key)  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}
