"""What a reader was sent: every edition with its delivery's outcome and the bounces that
came back for it. For the subscriber's admin page and the GDPR export (``mailer
subscribers show``), both of which must tell the person everything we hold about them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.bounces.models import Bounce
from mailer.deliveries.models import Delivery
from mailer.editions.models import Edition


@dataclass(frozen=True)
class BounceSeen:
    received_at: dt.datetime
    bounce_class: str
    status_code: str
    diagnostic: str
    action: str


@dataclass(frozen=True)
class EditionSent:
    edition_id: int
    subject: str
    slug: str
    state: str  # the delivery's: sent, deferred, failed, bounced, skipped, cancelled…
    attempts: int
    sent_at: dt.datetime | None
    updated_at: dt.datetime
    smtp_code: int | None
    smtp_reply: str | None
    outcome: str | None
    bounces: list[BounceSeen] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For JSON: times in ISO 8601."""
        return {
            "edition": self.edition_id, "subject": self.subject, "slug": self.slug,
            "state": self.state, "attempts": self.attempts,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "updated_at": self.updated_at.isoformat(),
            "smtp_code": self.smtp_code, "smtp_reply": self.smtp_reply, "outcome": self.outcome,
            "bounces": [{"received_at": b.received_at.isoformat(), "class": b.bounce_class,
                         "status": b.status_code, "diagnostic": b.diagnostic,
                         "action": b.action} for b in self.bounces],
        }


def editions_sent(session: Session, subscriber_id: int, *, limit: int | None = None
                  ) -> list[EditionSent]:
    """The subscriber's deliveries, newest edition first, each with its bounces (a bounce
    tied to the subscriber and the edition, whether or not it named the delivery)."""
    as_sent = func.coalesce(Edition.subject_snapshot, Edition.subject)
    query = (select(Delivery, as_sent, Edition.slug)
             .join(Edition, Edition.id == Delivery.edition_id)
             .where(Delivery.subscriber_id == subscriber_id)
             .order_by(Delivery.edition_id.desc()))
    rows = session.execute(query.limit(limit) if limit else query).all()
    bounces: dict[int, list[BounceSeen]] = {}
    edition_ids = [delivery.edition_id for delivery, _, _ in rows]
    if edition_ids:
        for bounce in session.scalars(
                select(Bounce).where(Bounce.subscriber_id == subscriber_id,
                                     Bounce.edition_id.in_(edition_ids))
                .order_by(Bounce.received_at, Bounce.id)):
            assert bounce.edition_id is not None
            bounces.setdefault(bounce.edition_id, []).append(BounceSeen(
                bounce.received_at, bounce.bounce_class, bounce.status_code, bounce.diagnostic,
                bounce.action))
    return [
        EditionSent(
            edition_id=delivery.edition_id, subject=subject, slug=slug, state=delivery.state,
            attempts=delivery.attempts, sent_at=delivery.sent_at, updated_at=delivery.updated_at,
            smtp_code=delivery.smtp_code, smtp_reply=delivery.smtp_reply,
            outcome=delivery.outcome, bounces=bounces.get(delivery.edition_id, []))
        for delivery, subject, slug in rows
    ]
