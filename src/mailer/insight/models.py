"""What insight keeps of its own: an edition's delivery figures, summed once it is sent,
its deferrals per minute and domain, and the list's figures of each week that is over."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
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


class EditionDeferral(Base):
    """How many of an edition's deliveries a receiving domain deferred (answered with a
    temporary refusal, a 4xx) in one minute (UTC). The send adds to it in the statement that
    records those answers (``mailer.delivery.ledger``): a delivery row keeps only how often
    it was tried, not when. A count, like a link's clicks: it names no reader."""

    __tablename__ = "edition_deferral"

    edition_id: Mapped[int] = mapped_column(
        ForeignKey("edition.id", ondelete="CASCADE"), primary_key=True)
    minute: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    deferrals: Mapped[int] = mapped_column(Integer)


class ListWeek(Base):
    """A week that is over, counted once: its confirmed sign-ups, unsubscribes by channel,
    bounces and complaints (``mailer.insight.growth``). Nothing is added to a past week
    (events and bounces are written when they happen), so the list over time reads a row
    per week instead of every event of a year. A reader erased after the week was counted
    stays in its counts, which name nobody."""

    __tablename__ = "list_week"

    #: The Monday it starts on (UTC), as 2026-11-30.
    starts: Mapped[str] = mapped_column(String(10), primary_key=True)
    made_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)
