"""Reads of the subscribers, written once for the web, the CLI and the sending side (the
suppression list's are in ``mailer.suppression.queries``).

Who may receive a newsletter now ("mailable") is written here twice, in one place: as a
SQLAlchemy expression (the audience's count and freeze) and as the SQL text the batch's
hand-written statements embed; ``tests/test_delivery_states.py`` checks that both choose
the same readers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from mailer.subscribers.models import Subscriber, SubscriberStatus, Suppression

#: ``mailable()`` as SQL text, over ``subscriber`` aliased ``s`` (and ``suppression`` as ``x``).
MAILABLE_SQL = (
    "s.status = 'confirmed' AND NOT EXISTS "
    "(SELECT 1 FROM suppression x WHERE x.address_hash = s.address_hash)"
)


def mailable() -> ColumnElement[bool]:
    """Confirmed and not on the suppression list: who may receive a newsletter now."""
    return (Subscriber.status == SubscriberStatus.confirmed) & ~exists().where(
        Suppression.address_hash == Subscriber.address_hash
    )


def audience_size(session: Session) -> int:
    """How many readers a send started now would go to."""
    return int(session.scalar(select(func.count()).select_from(Subscriber).where(mailable())) or 0)


#: The largest value of an INTEGER id column.
_MAX_ID = 2**31 - 1


def search(session: Session, *, email: str = "", status: str | None = None,
           after_id: int = 0, limit: int = 50) -> list[Subscriber]:
    """Subscribers in id order after ``after_id`` (keyset pagination: a page costs the same
    deep in the list as at its start), whose address contains ``email`` (any case)."""
    if after_id >= _MAX_ID:  # past any id the column holds (PostgreSQL refuses the bind)
        return []
    return list(session.scalars(search_query(email, status, after_id, limit)))


def search_query(email: str, status: str | None, after_id: int, limit: int) -> Select[Any]:
    """:func:`search`'s statement. On PostgreSQL a part of an address is found through
    the trigram index (migration 0014) rather than by reading every row."""
    query = select(Subscriber).order_by(Subscriber.id)
    if after_id:
        query = query.where(Subscriber.id > after_id)
    if email:
        query = query.where(Subscriber.email_key.contains(email.lower(), autoescape=True))
    if status:
        query = query.where(Subscriber.status == status)
    return query.limit(limit)


def by_public_id(session: Session, public_id: str) -> Subscriber | None:
    return session.scalars(select(Subscriber).where(Subscriber.public_id == public_id)).first()
