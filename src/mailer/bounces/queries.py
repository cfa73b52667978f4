"""Reads of the bounces for other systems (the API): a page at a time by keyset."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from mailer.bounces.models import Bounce
from mailer.subscribers.models import Subscriber

#: The largest value of an INTEGER id column.
_MAX_ID = 2**31 - 1


class BounceRow(NamedTuple):
    bounce: Bounce
    #: The public ids of the subscriber it acted on and of the one it names (unverified).
    subscriber: str | None
    claimed_subscriber: str | None


def page(session: Session, *, after_id: int = 0, limit: int = 50,
         bounce_class: str | None = None, trust: str | None = None) -> list[BounceRow]:
    """Bounces in id order after ``after_id`` (the order they came: a caller polling for
    new ones passes the last id it saw), of one class and one trust if given."""
    if after_id >= _MAX_ID:
        return []
    tied, claimed = aliased(Subscriber), aliased(Subscriber)
    query = (select(Bounce, tied.public_id, claimed.public_id)
             .outerjoin(tied, tied.id == Bounce.subscriber_id)
             .outerjoin(claimed, claimed.id == Bounce.claimed_subscriber_id)
             .where(Bounce.id > after_id).order_by(Bounce.id).limit(limit))
    if bounce_class:
        query = query.where(Bounce.bounce_class == bounce_class)
    if trust is not None:
        query = query.where(Bounce.trust == trust)
    return [BounceRow(b, s, c) for b, s, c in session.execute(query)]
