"""What the editors see of an edition's links: how often each was followed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.clicks.models import EditionLink


@dataclass(frozen=True)
class LinkFigures:
    position: int
    url: str
    label: str
    clicks: int
    head_requests: int
    scanner_clicks: int
    #: Of the edition's most followed link's clicks, for a bar (0–100).
    percent: int


def per_link(session: Session, edition_id: int) -> list[LinkFigures]:
    """The edition's links, most followed first (counts as of the last flush, a minute)."""
    rows = list(session.scalars(
        select(EditionLink).where(EditionLink.edition_id == edition_id)
        .order_by(EditionLink.clicks.desc(), EditionLink.position)))
    most = max((row.clicks for row in rows), default=0) or 1
    return [LinkFigures(row.position, row.url, row.label or row.url, row.clicks,
                        row.head_requests, row.scanner_clicks, round(100 * row.clicks / most))
            for row in rows]
