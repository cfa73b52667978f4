"""The outbox of outgoing webhooks: endpoints, the events written for them, one delivery
per event and endpoint, and the log of every attempt."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailer.db import Base, UTCDateTime, utcnow


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoint"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    #: ``whsec_`` + base64 of 32 random bytes: the key both sides sign with (Standard
    #: Webhooks' symmetric scheme), so it is kept as it is, and shown once.
    secret: Mapped[str] = mapped_column(String(100))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(320), default="")
    #: The first failure since the last success; a day of failures disables the endpoint.
    failing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str] = mapped_column(Text, default="")

    def wants(self, kind: str) -> bool:
        return kind in (self.events or [])


class WebhookMessage(Base):
    """One thing that happened, as the receivers get it (``type``, ``timestamp``, ``data``)."""

    __tablename__ = "webhook_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The ``webhook-id`` header: the same for every attempt, so receivers can deduplicate.
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The subscriber the event is about: an erasure removes their details from it.
    subscriber_id: Mapped[int | None] = mapped_column(Integer, index=True)


class DeliveryState(enum.StrEnum):
    pending = "pending"  # to be attempted (now, or after its back-off)
    delivered = "delivered"  # a 2xx came back
    failed = "failed"  # retried for a day without a 2xx: given up (staff can redeliver)


class WebhookDelivery(Base):
    __tablename__ = "webhook_delivery"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_message.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When its task was last published: the sweep queues it again if none ran since.
    queued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: A worker's claim while it attempts (its token and how long it may take).
    claim: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Retried for ``webhook_retry_hours`` from here (its event's time; a redelivery's).
    retry_from: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="")

    event: Mapped[WebhookMessage] = relationship(lazy="joined", innerjoin=True)

    __table_args__ = (
        Index("ix_webhook_delivery_state_next", "state", "next_attempt_at"),
        Index("ix_webhook_delivery_endpoint_id", "endpoint_id", "id"),
    )


class AttemptOutcome(enum.StrEnum):
    delivered = "delivered"  # 2xx
    failed = "failed"  # another HTTP status
    timeout = "timeout"  # no whole answer within webhook_timeout_seconds
    error = "error"  # no connection, TLS, a broken answer
    refused = "refused"  # the target is a private address not allowed


class WebhookAttempt(Base):
    """The delivery log: every attempt, with the receiver's status code and the latency."""

    __tablename__ = "webhook_attempt"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_delivery.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_webhook_attempt_endpoint_id", "endpoint_id", "id"),)
