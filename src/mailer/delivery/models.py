"""Deliveries: one row per (edition, subscriber), the truth of what was sent to whom."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailer.db import Base, UTCDateTime, utcnow


class DeliveryState(enum.StrEnum):
    queued = "queued"  # waiting for a worker
    sending = "sending"  # claimed by a worker, the SMTP transaction under way
    deferred = "deferred"  # a temporary failure: queued again at next_attempt_at
    sent = "sent"  # the server accepted it (250 after DATA)
    failed = "failed"  # given up: retries exhausted, or a policy rejection
    bounced = "bounced"  # hard bounce at RCPT/DATA: the address is suppressed
    skipped = "skipped"  # not sent: unsubscribed or suppressed since the audience froze
    cancelled = "cancelled"  # the edition was cancelled before this one went out


#: States in which nothing more will happen to a delivery.
FINAL_STATES = frozenset(
    {DeliveryState.sent, DeliveryState.failed, DeliveryState.bounced, DeliveryState.skipped,
     DeliveryState.cancelled}
)


class Delivery(Base):
    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("edition.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriber.id", ondelete="SET NULL"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.queued)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    #: Why it failed or was skipped, in words an operator understands.
    outcome: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id"),
        Index("ix_delivery_edition_state", "edition_id", "state"),
    )
