"""What insight keeps of its own: an edition's delivery figures, summed once it is sent."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from mailer.db import Base, UTCDateTime, utcnow


class EditionSummary(Base):
    """The figures of a sent edition that come from its delivery rows (states, deferrals,
    messages per minute, receiving domains), summed once: the rows do not change after the
    send, and reading a million of them for every page view would not answer in time.

    Bounces, complaints, unsubscribes and clicks keep arriving after the send and are read
    fresh from their own tables. Nothing in it names a reader: counts only."""

    __tablename__ = "edition_summary"

    edition_id: Mapped[int] = mapped_column(
        ForeignKey("edition.id", ondelete="CASCADE"), primary_key=True)
    made_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)
