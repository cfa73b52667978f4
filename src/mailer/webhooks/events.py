"""The events the service tells other systems about, and the outbox they go through.

:func:`emit` is called by the services where the change happens (a sign-up, a
confirmation, a bounce recorded, an edition changing state), in the caller's transaction:
the event and its deliveries commit with the change or not at all, and the delivery tasks
are published after that commit. A task lost on the way (Redis away, a worker killed) is
queued again by the sweep (:mod:`mailer.webhooks.sending`), so an event committed is an
event delivered, at least once.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import tasks
from mailer.db import utcnow
from mailer.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookMessage

if TYPE_CHECKING:
    from mailer.subscribers.models import Subscriber

SUBSCRIBED = "subscriber.subscribed"
CONFIRMED = "subscriber.confirmed"
UNSUBSCRIBED = "subscriber.unsubscribed"
ERASED = "subscriber.erased"
BOUNCE = "bounce.recorded"
COMPLAINT = "complaint.recorded"
EDITION_SENDING = "edition.sending"
EDITION_PAUSED = "edition.paused"
EDITION_SENT = "edition.sent"

#: Every event an endpoint can ask for, with what it means.
EVENTS: dict[str, str] = {
    SUBSCRIBED: "a reader signed up (not yet confirmed)",
    CONFIRMED: "a reader confirmed, or was imported as confirmed",
    UNSUBSCRIBED: "a reader left (link, one-click, complaint, staff, API)",
    ERASED: "a reader's data was erased (only the address hash remains)",
    BOUNCE: "a bounce of one of our mails was recorded for a reader or an edition",
    COMPLAINT: "a reader reported a mail as spam",
    EDITION_SENDING: "an edition started going out (or resumed)",
    EDITION_PAUSED: "an edition was paused (by staff or by the circuit breaker)",
    EDITION_SENT: "an edition has gone out to everyone",
}

def emit(session: Session, kind: str, data: dict[str, Any], *,
         subscriber_id: int | None = None) -> WebhookMessage | None:
    """Write event ``kind`` and one delivery for each enabled endpoint that wants it, in
    ``session``'s transaction, and publish the deliveries once it commits. None when no
    endpoint wants it (nothing is written)."""
    endpoints = endpoints_wanting(session, kind)
    if not endpoints:
        return None
    now = utcnow()
    event = WebhookMessage(message_id="msg_" + secrets.token_urlsafe(18), kind=kind,
                           data=data, created_at=now, subscriber_id=subscriber_id)
    session.add(event)
    session.flush()
    deliveries = [WebhookDelivery(event_id=event.id, endpoint_id=e.id, next_attempt_at=now,
                                  queued_at=now, retry_from=now)
                  for e in endpoints]
    session.add_all(deliveries)
    session.flush()
    tasks.publish_many(tasks.DELIVER_WEBHOOK, [(d.id,) for d in deliveries], session=session)
    return event


def endpoints_wanting(session: Session, kind: str) -> list[WebhookEndpoint]:
    """The enabled endpoints that want ``kind``. (The sign-up of an address that is
    subscribed already asks too, and emits nothing: its answer must take as long.)"""
    assert kind in EVENTS, kind
    return [e for e in session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True))) if e.wants(kind)]


def body_of(event: WebhookMessage) -> dict[str, Any]:
    """What a receiver gets: the Standard Webhooks payload shape."""
    return {"type": event.kind, "timestamp": _iso(event.created_at), "data": event.data}


# --- what the events say ---------------------------------------------------------------------


def subscriber_data(subscriber: Subscriber, **extra: Any) -> dict[str, Any]:
    return {"subscriber": {
        "id": subscriber.public_id, "email": subscriber.email,
        "first_name": subscriber.first_name, "last_name": subscriber.last_name,
        "organisation": subscriber.organisation, "country": subscriber.country,
        "source": subscriber.source,
    }, **extra}


def emit_for_subscriber(session: Session, kind: str, subscriber: Subscriber,
                        **extra: Any) -> WebhookMessage | None:
    return emit(session, kind, subscriber_data(subscriber, **extra),
                subscriber_id=subscriber.id)


def forget_subscriber(session: Session, subscriber_id: int) -> int:
    """An erasure: the events about this subscriber keep their id only (deliveries still
    due send that). Returns how many were changed."""
    changed = 0
    for event in session.scalars(select(WebhookMessage)
                                 .where(WebhookMessage.subscriber_id == subscriber_id)):
        public_id = (event.data.get("subscriber") or {}).get("id")
        event.data = {"subscriber": {"id": public_id, "erased": True}}
        event.subscriber_id = None
        changed += 1
    return changed


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
