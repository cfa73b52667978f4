"""A person's data across the domains: the export (GDPR Art. 15), the erasure (Art. 17),
and forgetting sign-ups never confirmed.

It sits above subscribers, bounces and delivery, since a person's data is in all three:
what a subscriber is, what bounced for them, what they were sent.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.bounces.models import Bounce
from mailer.db import audience_lock, utcnow
from mailer.delivery.history import editions_sent
from mailer.lists.models import MailingList, Subscription, SubscriptionStatus
from mailer.lists.service import slugs_of
from mailer.subscribers.addresses import normalise
from mailer.subscribers.confirmation import retire_open_links
from mailer.subscribers.models import (
    ConsentEvent,
    ConsentEventKind,
    Subscriber,
    Suppression,
    SuppressionReason,
)
from mailer.subscribers.records import find, record_event
from mailer.tokens import address_hash
from mailer.webhooks.events import (
    ERASED,
    UNSUBSCRIBED,
    emit,
    emit_for_subscriber,
    forget_subscriber,
)


def export(session: Session, subscriber: Subscriber, *, by: str) -> dict[str, Any]:
    """The subscriber, the whole consent history and every edition they were sent, with
    what happened to it: the GDPR Art. 15 export; the audit log says who took it (``by``)."""
    record(session, actor=by, action="subscriber.export", target=f"subscriber:{subscriber.id}")
    suppression = session.scalars(
        select(Suppression).where(Suppression.address_hash == subscriber.address_hash)
    ).first()
    events = session.scalars(
        select(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber.id)
        .order_by(ConsentEvent.id)
    ).all()
    slug_of = dict(session.execute(select(MailingList.id, MailingList.slug)).all())
    return {
        "email": subscriber.email,
        "first_name": subscriber.first_name,
        "last_name": subscriber.last_name,
        "organisation": subscriber.organisation,
        "country": subscriber.country,
        "source": subscriber.source,
        "created_at": _iso(subscriber.created_at),
        "subscriptions": [
            {"list": lst.slug, "name": lst.name, "status": held.status,
             "topics": "all" if held.topics is None else held.topics,
             "created_at": _iso(held.created_at), "confirmed_at": _iso(held.confirmed_at),
             "unsubscribed_at": _iso(held.unsubscribed_at)}
            for held, lst in session.execute(
                select(Subscription, MailingList)
                .join(MailingList, MailingList.id == Subscription.list_id)
                .where(Subscription.subscriber_id == subscriber.id)
                .order_by(MailingList.position, MailingList.id))
        ],
        "suppressed": {"reason": suppression.reason, "since": _iso(suppression.created_at)}
        if suppression else None,
        "consent_history": [
            {
                "event": e.kind,
                "at": _iso(e.at),
                **({"list": slug_of[e.list_id]} if e.list_id in slug_of else {}),
                **{k: v for k, v in (
                    ("consent_version", e.consent_version), ("consent_text", e.consent_text),
                    ("source", e.source), ("channel", e.channel), ("ip", e.ip),
                    ("user_agent", e.user_agent), ("message_id", e.message_id),
                    ("detail", e.detail)) if v},
            }
            for e in events
        ],
        "editions_sent": [sent.as_dict() for sent in editions_sent(session, subscriber.id)],
    }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def erase(session: Session, subscriber: Subscriber, *, by: str) -> str:
    """Delete everything about a person but a hashed suppression entry (GDPR Art. 17),
    and say in the audit log who did (``by``).

    Returns the address hash that remains. Bounce evidence naming the address goes too,
    and so does the evidence text of an earlier suppression (it may quote the address).
    """
    hash_ = subscriber.address_hash
    audience_lock(session, exclusive=True)  # not while an audience freezes
    record(session, actor=by, action="subscriber.erase", target=f"subscriber:{subscriber.id}",
           detail={"address_hash": hash_})
    _forget_bounces(session, subscriber, by_address=True)
    session.execute(delete(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber.id))
    public_id = subscriber.public_id
    forget_subscriber(session, subscriber.id)  # the webhook events about them keep the id
    session.delete(subscriber)
    session.flush()
    _keep_erased_hash(session, hash_, by=by)
    emit(session, ERASED, {"subscriber": {"id": public_id, "erased": True},
                           "address_hash": hash_})
    return hash_


def erase_address(session: Session, email: str, *, by: str) -> tuple[bool, str]:
    """Erase whoever has this address; with nobody to erase, still make sure the address
    is never mailed (a person who asks not to be mailed before any import brings them in).

    Returns (a subscriber was erased, the hash kept). Raises InvalidAddress.
    """
    subscriber = find(session, email)
    if subscriber is not None:
        return True, erase(session, subscriber, by=by)
    hash_ = address_hash(normalise(email)[1])
    _keep_erased_hash(session, hash_, by=by)
    emit(session, ERASED, {"subscriber": None, "address_hash": hash_})
    record(session, actor=by, action="subscriber.erase", target=f"address:{hash_[:16]}",
           detail={"address_hash": hash_})
    return False, hash_


def _keep_erased_hash(session: Session, hash_: str, *, by: str) -> None:
    existing = session.scalars(select(Suppression).where(Suppression.address_hash == hash_)).first()
    if existing is None:
        session.add(Suppression(address_hash=hash_, reason=SuppressionReason.erased,
                                created_by=by[:100], evidence="erased on request"))
    else:
        existing.evidence = "erased on request"
    # The one trace kept: that an erasure happened, under the hash alone.
    session.add(ConsentEvent(subscriber_id=None, address_hash=hash_,
                             kind=ConsentEventKind.erased, detail={"by": by}))


def _forget_bounces(session: Session, subscriber: Subscriber, *, by_address: bool) -> None:
    """Bounce rows keep their counts and classes, but nothing that names the person.

    ``by_address`` also finds bounces that were never tied to the subscriber (a full scan
    of the bounce table: fine for an erasure on request, not for a batch purge).
    """
    whose = Bounce.subscriber_id == subscriber.id
    if by_address:
        whose = whose | (func.lower(Bounce.recipient) == subscriber.email.lower())
    session.execute(
        update(Bounce).where(whose)
        .values(recipient="", raw_excerpt="", diagnostic="", subscriber_id=None)
    )


def purge_pending(session: Session, *, older_than: dt.timedelta) -> int:
    """Sign-ups to a list not confirmed within ``older_than`` (MAILER_PURGE_PENDING_AFTER_DAYS,
    14 days): forgotten. A re-subscription that was never confirmed falls back to
    unsubscribed instead, since the person's earlier consent and its withdrawal are a record
    we must keep. A person left on no list at all is forgotten whole, as if they had never
    signed up. Returns how many subscriptions were purged."""
    now = utcnow()
    cutoff, days = now - older_than, older_than.days
    # Locked, and those a confirmation holds right now left for the next run: a reader
    # who presses Confirm on day 14 is not purged under their own click.
    stale = session.scalars(
        select(Subscription).where(Subscription.status == SubscriptionStatus.pending,
                                   Subscription.updated_at < cutoff)
        .order_by(Subscription.id)
        .limit(5000)
        .with_for_update(skip_locked=True)
    ).all()
    if stale:
        audience_lock(session, exclusive=True)  # not while an audience freezes
    for held in stale:
        subscriber = session.get(Subscriber, held.subscriber_id)
        if subscriber is None:
            continue
        if held.confirmed_at is not None:
            held.status = SubscriptionStatus.unsubscribed
            held.unsubscribed_at = now
            record_event(session, subscriber, ConsentEventKind.unsubscribed, at=now,
                         channel="unconfirmed", list_id=held.list_id,
                         detail={"reason": f"re-subscription not confirmed in {days} days"})
            emit_for_subscriber(session, UNSUBSCRIBED, subscriber, channel="unconfirmed",
                                lists=slugs_of(session, [held.list_id]))
            if not _pending_anywhere(session, subscriber.id):
                retire_open_links(session, subscriber, now)
            continue
        session.execute(delete(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber.id,
                                                   ConsentEvent.list_id == held.list_id))
        session.delete(held)
        session.flush()
        if session.scalar(select(Subscription.id)
                          .where(Subscription.subscriber_id == subscriber.id).limit(1)):
            continue  # still on another list
        forget_subscriber(session, subscriber.id)
        _forget_bounces(session, subscriber, by_address=False)
        session.execute(delete(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber.id))
        session.delete(subscriber)
    return len(stale)


def _pending_anywhere(session: Session, subscriber_id: int) -> bool:
    return session.scalar(select(Subscription.id).where(
        Subscription.subscriber_id == subscriber_id,
        Subscription.status == SubscriptionStatus.pending).limit(1)) is not None
