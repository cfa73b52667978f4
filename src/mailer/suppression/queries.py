"""Reads of the suppression list, written once for the web, the CLI and ops."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.subscribers.models import Subscriber, Suppression


class SuppressionRow(NamedTuple):
    """One entry of the suppression list, with the subscriber who still has the address
    (None once erased, or if the address never subscribed)."""

    suppression: Suppression
    email: str | None
    subscriber_id: int | None


def suppressions(session: Session, *, reason: str | None = None,
                 address_hash: str | None = None, limit: int | None = None,
                 ) -> list[SuppressionRow]:
    """The suppression list, newest first; only ``reason`` or one address if given."""
    query = (select(Suppression, Subscriber.email, Subscriber.id)
             .outerjoin(Subscriber, Subscriber.address_hash == Suppression.address_hash)
             .order_by(Suppression.created_at.desc(), Suppression.id.desc()))
    if reason:
        query = query.where(Suppression.reason == reason)
    if address_hash:
        query = query.where(Suppression.address_hash == address_hash)
    if limit is not None:
        query = query.limit(limit)
    return [SuppressionRow(s, email, subscriber_id)
            for s, email, subscriber_id in session.execute(query)]


def suppression_of(session: Session, address_hash: str) -> Suppression | None:
    """The suppression list's entry for this address, if it is on it."""
    return session.scalars(
        select(Suppression).where(Suppression.address_hash == address_hash)).first()


def suppression_counts(session: Session) -> dict[str, int]:
    """How many entries per reason."""
    return {reason: int(n) for reason, n in session.execute(
        select(Suppression.reason, func.count()).group_by(Suppression.reason))}
