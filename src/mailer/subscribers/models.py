"""Subscribers, their consent history, confirmation tokens and the suppression list."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailer.db import Base, UTCDateTime, utcnow


class Subscriber(Base):
    __tablename__ = "subscriber"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Random public id: used in links instead of the row id or the address.
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    #: Canonical form (case- and Unicode-folded): one subscriber per key.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    #: sha256 of email_key: what suppressions and erasure keep.
    address_hash: Mapped[str] = mapped_column(String(64), index=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    organisation: Mapped[str] = mapped_column(String(200), default="")
    country: Mapped[str] = mapped_column(String(100), default="")
    source: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    events: Mapped[list[ConsentEvent]] = relationship(
        back_populates="subscriber", order_by="ConsentEvent.id", passive_deletes=True
    )

    __table_args__ = (
        #: PostgreSQL only (migration 0014): a search for a part of an address
        #: (``email_key LIKE '%part%'``) reads the rows that hold its trigrams.
        Index("ix_subscriber_email_key_trgm", "email_key", postgresql_using="gin",
              postgresql_ops={"email_key": "gin_trgm_ops"}),
    )

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)


class ConsentEventKind(enum.StrEnum):
    subscribed = "subscribed"
    #: The form was sent for an address that is confirmed already: nothing changed, no
    #: mail went out. Written so that this answer costs what every other sign-up costs.
    already_subscribed = "already_subscribed"
    confirmation_sent = "confirmation_sent"
    confirmed = "confirmed"
    #: The welcome mail after a confirmation went out (its Message-ID names the round).
    welcome_sent = "welcome_sent"
    unsubscribed = "unsubscribed"
    resubscribed = "resubscribed"
    imported = "imported"
    suppressed = "suppressed"
    unsuppressed = "unsuppressed"
    erased = "erased"
    #: The reader changed their name on the preference page (``detail``: the fields).
    name_changed = "name_changed"
    #: On the preference page the reader asked for their data (GDPR Art. 15) or to be
    #: erased (Art. 17): a confirmation link goes to the address (``detail``: its round).
    export_requested = "export_requested"
    erasure_requested = "erasure_requested"
    #: That confirmation mail went out (``message_id``; ``detail``: the action and round).
    request_mailed = "request_mailed"
    #: The export's confirmation link was clicked; then the data went out (``message_id``).
    export_confirmed = "export_confirmed"
    data_exported = "data_exported"
    #: The reader changed the topics they follow on a list (``detail``: before and after).
    topics_changed = "topics_changed"


#: The kinds of event that are about one list (``ConsentEvent.list_id`` names it); the
#: others are about the person or the address.
LIST_KINDS = frozenset({
    ConsentEventKind.subscribed, ConsentEventKind.already_subscribed,
    ConsentEventKind.confirmation_sent, ConsentEventKind.confirmed,
    ConsentEventKind.welcome_sent, ConsentEventKind.unsubscribed,
    ConsentEventKind.resubscribed, ConsentEventKind.imported, ConsentEventKind.topics_changed,
})


class ConsentEvent(Base):
    """Append-only record of every change to a person's consent (GDPR Art. 7(1))."""

    __tablename__ = "consent_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriber.id", ondelete="SET NULL"), index=True
    )
    address_hash: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    consent_version: Mapped[str | None] = mapped_column(String(32))
    consent_text: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    message_id: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The edition whose unsubscribe link was used (its URL names it; checked against the
    #: reader's deliveries), for the editors' "unsubscribes from this edition". No foreign
    #: key: this package stays below the editions one, and the id alone says nothing.
    edition_id: Mapped[int | None] = mapped_column(Integer)
    #: The list an event of ``LIST_KINDS`` is about (no foreign key: migration 0016).
    list_id: Mapped[int | None] = mapped_column(Integer)

    subscriber: Mapped[Subscriber | None] = relationship(back_populates="events")

    __table_args__ = (
        # The list over time: events of a kind, week by week (insight).
        Index("ix_consent_event_kind_at", "kind", "at"),
        # An edition's unsubscribes, counted without reading the whole table.
        Index("ix_consent_event_edition_kind", "edition_id", "kind"),
    )


class ConfirmationToken(Base):
    """One double opt-in round: the link is ``<id>.<hmac(nonce)>``, single use, expiring."""

    __tablename__ = "confirmation_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscriber.id", ondelete="CASCADE"), index=True
    )
    #: The lists (ids) this round confirms: those its mail names.
    lists: Mapped[list[int] | None] = mapped_column(JSON)
    nonce: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Set while a worker sends the mail; a crashed worker's claim runs out and is taken again.
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Set only once the SMTP server accepted the mail.
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(255))
    #: Outcome of the last attempt to send the mail (SMTP reply), for ops.
    last_error: Mapped[str | None] = mapped_column(Text)


class SuppressionReason(enum.StrEnum):
    hard_bounce = "hard_bounce"
    soft_bounces = "soft_bounces"
    complaint = "complaint"
    manual = "manual"
    erased = "erased"


class Suppression(Base):
    """An address that is never mailed again, kept as a hash so that erasure can keep it."""

    __tablename__ = "suppression"

    id: Mapped[int] = mapped_column(primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    evidence: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100), default="system")
