"""Reads of the subscribers, written once for the web, the CLI and the sending side (the
suppression list's are in ``mailer.suppression.queries``).

Who may receive a list's newsletter now ("mailable") is written here twice, in one place:
as a SQLAlchemy expression (the audience's count and freeze) and as the SQL text the
batch's hand-written statements embed; ``tests/test_delivery_states.py`` checks that both
choose the same readers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from mailer.lists.models import Subscription, SubscriptionStatus
from mailer.subscribers.models import Subscriber, Suppression

#: ``mailable(list)`` as SQL text, over ``subscriber`` aliased ``s`` and the ``delivery`` row
#: ``d`` being sent (its edition names the list; ``suppression`` is ``x``).
MAILABLE_SQL = (
    "EXISTS (SELECT 1 FROM subscription b WHERE b.subscriber_id = s.id AND b.status = "
    "'confirmed' AND b.list_id = (SELECT e.list_id FROM edition e WHERE e.id = d.edition_id)) "
    "AND NOT EXISTS (SELECT 1 FROM suppression x WHERE x.address_hash = s.address_hash)"
)


def mailable(list_id: int) -> ColumnElement[bool]:
    """Confirmed on the list and not on the suppression list: who may receive the list's
    newsletter now (over ``Subscriber``)."""
    return exists().where(
        Subscription.subscriber_id == Subscriber.id, Subscription.list_id == list_id,
        Subscription.status == SubscriptionStatus.confirmed,
    ) & ~exists().where(Suppression.address_hash == Subscriber.address_hash)


def audience_size(session: Session, list_id: int) -> int:
    """How many readers a send to the list started now would go to."""
    return int(session.scalar(select(func.count()).select_from(Subscriber)
                              .where(mailable(list_id))) or 0)


#: The largest value of an INTEGER id column.
_MAX_ID = 2**31 - 1


def search(session: Session, *, email: str = "", status: str | None = None,
           list_id: int | None = None, after_id: int = 0, limit: int = 50) -> list[Subscriber]:
    """Subscribers in id order after ``after_id`` (keyset pagination: a page costs the same
    deep in the list as at its start), whose address contains ``email`` (any case), on the
    list ``list_id`` (in ``status`` there when given; ``status`` without a list: that status
    over all lists, as :func:`overall_status` says it)."""
    if after_id >= _MAX_ID:  # past any id the column holds (PostgreSQL refuses the bind)
        return []
    return list(session.scalars(search_query(email, status, after_id, limit, list_id)))


def search_query(email: str, status: str | None, after_id: int, limit: int,
                 list_id: int | None = None) -> Select[Any]:
    """:func:`search`'s statement. On PostgreSQL a part of an address is found through
    the trigram index (migration 0014) rather than by reading every row."""
    query = select(Subscriber).order_by(Subscriber.id)
    if after_id:
        query = query.where(Subscriber.id > after_id)
    if email:
        query = query.where(Subscriber.email_key.contains(email.lower(), autoescape=True))
    if list_id is not None:
        on_list = [Subscription.subscriber_id == Subscriber.id, Subscription.list_id == list_id]
        if status:
            on_list.append(Subscription.status == status)
        query = query.where(exists().where(*on_list))
    elif status:
        query = query.where(_overall_is(status))
    return query.limit(limit)


def _overall_is(status: str) -> ColumnElement[bool]:
    """``overall_status`` as SQL: confirmed on a list; else pending on one; else neither."""
    def on_any(held: str) -> ColumnElement[bool]:
        return exists().where(Subscription.subscriber_id == Subscriber.id,
                              Subscription.status == held)

    confirmed, pending = on_any(SubscriptionStatus.confirmed), on_any(SubscriptionStatus.pending)
    if status == SubscriptionStatus.confirmed:
        return confirmed
    if status == SubscriptionStatus.pending:
        return pending & ~confirmed
    return ~confirmed & ~pending


def subscriptions_of(session: Session, subscriber_id: int) -> list[Subscription]:
    """A person's subscriptions, in list id order."""
    return list(session.scalars(select(Subscription)
                                .where(Subscription.subscriber_id == subscriber_id)
                                .order_by(Subscription.list_id)))


def overall_status(session: Session | None, subscriber_id: int) -> str:
    """Over all lists: confirmed on one at least, else pending on one, else unsubscribed."""
    assert session is not None
    statuses = set(session.scalars(select(Subscription.status)
                                   .where(Subscription.subscriber_id == subscriber_id)))
    return next((s for s in (SubscriptionStatus.confirmed, SubscriptionStatus.pending)
                 if s in statuses), SubscriptionStatus.unsubscribed)


def status_on(session: Session, subscriber_id: int, list_id: int) -> str | None:
    """The person's status on the list; None when they never were on it."""
    return session.scalar(select(Subscription.status).where(
        Subscription.subscriber_id == subscriber_id, Subscription.list_id == list_id))


def by_public_id(session: Session, public_id: str) -> Subscriber | None:
    return session.scalars(select(Subscriber).where(Subscriber.public_id == public_id)).first()
