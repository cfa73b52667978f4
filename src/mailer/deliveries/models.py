"""The delivery table: one row per (edition, subscriber), the truth of what was sent to whom.

Its claims name a sender process (``mailer.delivery.models.SenderProcess``, the sending
side's own table).
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
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


#: States in which something may still happen to a delivery.
OPEN_STATES = (DeliveryState.queued, DeliveryState.sending, DeliveryState.deferred)

#: States in which nothing more will happen to a delivery.
FINAL_STATES = frozenset(
    {DeliveryState.sent, DeliveryState.failed, DeliveryState.bounced, DeliveryState.skipped,
     DeliveryState.cancelled}
)


class Delivery(Base):
    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    #: No foreign keys on the two links: PostgreSQL would check each of a million rows the
    #: freeze inserts (a query and a row lock each, most of the freeze's time), and the
    #: freeze reads those ids in the same statement, under the edition's lock and a lock
    #: that keeps erasure out (``mailer.delivery.service.freeze_lock``). What the keys did
    #: on delete, triggers do (migration 0009): an edition deleted takes its deliveries
    #: with it; a subscriber deleted (erased) leaves the delivery with no subscriber.
    edition_id: Mapped[int] = mapped_column(Integer)
    subscriber_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.queued)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: A claim's last resort: a holder that still beats but has not finished by then is
    #: considered stuck (``MAILER_LEASE_SECONDS``).
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: The sender process holding the claim while ``sending`` (no foreign key: the hot path
    #: writes it twice per message and a process's row is deleted once it is gone).
    holder_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    #: Why it failed or was skipped, in words an operator understands.
    outcome: Mapped[str | None] = mapped_column(String(32))
    #: The edition's variant this reader gets (``edition_variant.number``: the articles of
    #: their topics); NULL: the whole edition, its own snapshot.
    variant: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        # One delivery per reader and edition; subscriber first, so that it also finds a
        # reader's deliveries (their history, erasure).
        UniqueConstraint("subscriber_id", "edition_id"),
        # With the id last, a batch claims its next rows, the sweeper finds the claims and
        # retries of an edition, and "is anything still open" is answered, each by reading
        # only the index entries it needs, however long the list.
        Index("ix_delivery_edition_state_id", "edition_id", "state", "id"),
    )
