"""What sign-up, confirmation, unsubscribe and suppression all do to a subscriber's
records: write a consent event, find a subscriber by address, and read how many rows a
conditional update changed (those updates are the locks of the services).

The services take a session and keyword arguments, know nothing of the web or of Celery,
and never commit: the caller owns the transaction. Every change of consent writes a
ConsentEvent. (The export, erasure and purge are in mailer.privacy.)
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.orm import Session

from mailer.subscribers.addresses import normalise
from mailer.subscribers.models import ConsentEvent, ConsentEventKind, Subscriber


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE changed (the conditional updates of the services are their
    locks)."""
    return cast(CursorResult[Any], result).rowcount


def record_event(
    session: Session, subscriber: Subscriber, kind: ConsentEventKind, **fields: Any
) -> ConsentEvent:
    event = ConsentEvent(
        subscriber_id=subscriber.id, address_hash=subscriber.address_hash, kind=kind, **fields
    )
    session.add(event)
    return event


def find(session: Session, email: str) -> Subscriber | None:
    _, key = normalise(email)
    return session.scalars(select(Subscriber).where(Subscriber.email_key == key)).first()
