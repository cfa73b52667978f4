"""Bounces and complaints, each with its evidence, and provider webhook events seen."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailer.bounces.classes import BounceClass
from mailer.db import Base, UTCDateTime, utcnow

__all__ = ["Bounce", "BounceClass", "InboundMessage", "Trust", "WebhookEvent"]


class Trust(enum.StrEnum):
    """Whether a bounce may act on a reader (see :mod:`mailer.bounces.attribute`)."""

    #: Tied to a message we sent by a valid VERP token or signed Message-ID, or authentic by
    #: its source (our own SMTP transaction, a provider webhook whose signature checked).
    verified = "verified"
    #: Would act, but nothing ties it to a message we sent: kept as evidence, acts on nobody.
    unverified = "unverified"
    #: Was unverified; a staff member confirmed it by hand, and it acted then.
    confirmed = "confirmed"
    #: A class that never acts (delayed, autoreply, not-a-bounce, unparsed) and was not tied.
    none = ""


#: Why an unverified bounce could not be tied to a message we sent (the ``reason`` label of
#: ``mailer_bounces_unverified_total``); see :mod:`mailer.bounces.attribute`.
UNVERIFIED_REASONS = ("no-token", "forged-token", "forged-message-id", "unknown-message",
                      "other-recipient")


class Bounce(Base):
    __tablename__ = "bounce"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(32))
    bounce_class: Mapped[str] = mapped_column(String(16), index=True)
    recipient: Mapped[str] = mapped_column(String(320), default="")
    status_code: Mapped[str] = mapped_column(String(16), default="")
    diagnostic: Mapped[str] = mapped_column(Text, default="")
    remote_mta: Mapped[str] = mapped_column(String(255), default="")
    delivery_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("delivery.id", ondelete="SET NULL"),
        index=True,
    )
    edition_id: Mapped[int | None] = mapped_column(
        ForeignKey("edition.id", ondelete="SET NULL"), index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriber.id", ondelete="SET NULL"), index=True
    )
    #: How the bounce was tied to a delivery: verp, message-id, recipient or none.
    attribution: Mapped[str] = mapped_column(String(16), default="none")
    attribution_note: Mapped[str] = mapped_column(Text, default="")
    #: What we did about it: suppressed, counted, unsubscribed, alerted, nothing.
    action: Mapped[str] = mapped_column(String(32), default="")
    #: For a hard bounce, how strong its evidence is: "strong" suppresses at once, "weak"
    #: waits for a repeat (mailer.bounces.actions.confirms_weak_hard). '' for the others.
    evidence: Mapped[str] = mapped_column(String(8), default="", server_default="")
    raw_excerpt: Mapped[str] = mapped_column(Text, default="")
    #: Identifies the incoming item, so a re-import or a re-delivered task adds nothing.
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    #: verified, unverified, confirmed or "" (:class:`Trust`).
    trust: Mapped[str] = mapped_column(String(16), default="", server_default="", index=True)
    #: Why an unverified bounce could not be tied (no-token, forged-token,
    #: forged-message-id, unknown-message, other-recipient); "" otherwise.
    unverified_reason: Mapped[str] = mapped_column(String(32), default="", server_default="")
    #: Who an unverified (or repeated) bounce names: the delivery its valid token named, the
    #: subscriber whose address it gives. Never read by any rule: confirming copies them to
    #: delivery_id / subscriber_id, which are the ties that act.
    claimed_delivery_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("delivery.id", ondelete="SET NULL"),
    )
    claimed_subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriber.id", ondelete="SET NULL"), index=True
    )
    #: The one consequence this bounce had: its class and the message it was about
    #: (``hard:d42``). Unique, so a replayed bounce (the same DSN again with a new
    #: Message-ID or date) acts at most once, even when two workers take both at once.
    act_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    confirmed_by: Mapped[str | None] = mapped_column(String(320))
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("fingerprint", "recipient"),
        Index("ix_bounce_subscriber_class", "subscriber_id", "bounce_class"),
    )


class WebhookEvent(Base):
    """A provider event already applied: deduplication by the provider's own id."""

    __tablename__ = "webhook_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32), default="")
    payload_excerpt: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (UniqueConstraint("provider", "event_id"),)


class InboundMessage(Base):
    """A mail the bounce server accepted, kept until the intake has processed it.

    The server answers 250 only once this row is committed, so a message it accepted
    survives a crash, a Redis restart or a lost task: the beat task ``process-bounce-spool``
    picks up whatever a worker has not finished. The row is deleted in the transaction
    that records the bounce; the Bounce keeps the evidence.
    """

    __tablename__ = "inbound_message"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(32))
    envelope_from: Mapped[str] = mapped_column(String(320), default="")
    envelope_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
