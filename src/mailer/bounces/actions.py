"""Acting on a classified bounce: record it with its evidence, then do the one right thing.

- hard: suppress the address at once;
- complaint: unsubscribe and suppress at once;
- soft: count; ``soft_bounce_limit`` soft bounces on distinct editions within
  ``soft_bounce_days`` with no successful delivery between them suppress;
- policy: never suppress (the sender's problem) — counted for the operators' alert;
- delayed, autoreply, unparsed: kept as evidence, nothing else.

Every source (the SMTP replies of a send, DSN mails, ARF reports, provider webhooks)
comes through :func:`record_bounce`, so the rules live in one place.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import distinct, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.bounces.models import Bounce, BounceClass
from mailer.config import get_settings
from mailer.db import utcnow
from mailer.delivery.models import Delivery, DeliveryState
from mailer.subscribers import service as subscribers
from mailer.subscribers.models import Subscriber, SuppressionReason

EXCERPT_LIMIT = 8 * 1024


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
    """Store a bounce and apply its consequence. None when this exact bounce (same
    fingerprint and recipient) was recorded before: a re-import or a redelivered task."""
    if delivery_id is not None and (edition_id is None or subscriber_id is None):
        delivery = session.get(Delivery, delivery_id)
        if delivery is not None:
            edition_id = edition_id or delivery.edition_id
            subscriber_id = subscriber_id or delivery.subscriber_id
    bounce = Bounce(
        source=source, bounce_class=bounce_class, recipient=recipient[:320],
        status_code=status_code[:16], diagnostic=diagnostic[:2000], remote_mta=remote_mta[:255],
        delivery_id=delivery_id, edition_id=edition_id, subscriber_id=subscriber_id,
        attribution=attribution, attribution_note=attribution_note[:1000],
        raw_excerpt=raw_excerpt[:EXCERPT_LIMIT], fingerprint=fingerprint,
    )
    try:
        with session.begin_nested():
            session.add(bounce)
            session.flush()
    except IntegrityError:
        return None
    bounce.action = _act(session, bounce)
    return bounce


def _act(session: Session, bounce: Bounce) -> str:
    if bounce.subscriber_id is None:
        return "nothing: not attributed to a subscriber"
    subscriber = session.get(Subscriber, bounce.subscriber_id)
    if subscriber is None:
        return "nothing: subscriber erased"
    evidence = f"{bounce.source} {bounce.status_code} {bounce.diagnostic}".strip()[:1000]
    if bounce.bounce_class == BounceClass.hard:
        subscribers.suppress(session, subscriber.address_hash,
                             reason=SuppressionReason.hard_bounce, evidence=evidence)
        return "suppressed"
    if bounce.bounce_class == BounceClass.complaint:
        subscribers.unsubscribe(session, subscriber, channel="complaint")
        subscribers.suppress(session, subscriber.address_hash,
                             reason=SuppressionReason.complaint, evidence=evidence)
        return "unsubscribed and suppressed"
    if bounce.bounce_class == BounceClass.soft:
        count = soft_bounce_count(session, subscriber.id)
        limit = get_settings().soft_bounce_limit
        if count >= limit:
            subscribers.suppress(session, subscriber.address_hash,
                                 reason=SuppressionReason.soft_bounces,
                                 evidence=f"{count} soft bounces; last: {evidence}")
            return "suppressed"
        return f"counted ({count} of {limit})"
    if bounce.bounce_class == BounceClass.policy:
        return "alerted: policy rejection, reader not suppressed"
    return "nothing"


def soft_bounce_count(session: Session, subscriber_id: int) -> int:
    """Soft bounces on distinct editions within the window, since the last good delivery."""
    settings = get_settings()
    since = utcnow() - dt.timedelta(days=settings.soft_bounce_days)
    bounced_delivery = exists().where(
        Bounce.delivery_id == Delivery.id,
        Bounce.bounce_class.in_([BounceClass.soft, BounceClass.hard]),
    )
    last_good = session.scalar(
        select(func.max(Delivery.sent_at)).where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.state == DeliveryState.sent,
            ~bounced_delivery,
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
