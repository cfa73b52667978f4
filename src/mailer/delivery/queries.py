"""Reads of the deliveries for the staff's views: how many are in each state."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.deliveries.models import Delivery


def state_counts(session: Session, edition_id: int) -> dict[str, int]:
    """How many of the edition's deliveries are in each state (states with none left out)."""
    rows = session.execute(
        select(Delivery.state, func.count()).where(Delivery.edition_id == edition_id)
        .group_by(Delivery.state)
    ).all()
    return {state: int(n) for state, n in rows}


def state_counts_of(session: Session, edition_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """:func:`state_counts` for several editions at once (editions without any left out)."""
    counts: dict[int, dict[str, int]] = {}
    for edition_id, state, n in session.execute(
            select(Delivery.edition_id, Delivery.state, func.count())
            .where(Delivery.edition_id.in_(list(edition_ids)))
            .group_by(Delivery.edition_id, Delivery.state)):
        counts.setdefault(edition_id, {})[state] = int(n)
    return counts
