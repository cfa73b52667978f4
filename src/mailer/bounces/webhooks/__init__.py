"""Provider webhooks: bounces and complaints reported by an email service we relay through.

One module per provider (ses, sendgrid, mailgun, postmark) checks that a request really
comes from the provider and turns its payload into :class:`ProviderEvent` objects;
:func:`apply_events` then records them through the same rules as every other bounce.

- A request whose signature (or basic auth) does not verify, whose timestamp is too old,
  or that comes from a topic we do not know is refused with a 4xx and changes nothing.
- Every event is remembered by its provider's id (WebhookEvent, unique on provider and
  id): a request all of whose events were applied before is a replay, refused with 409;
  a batch with some new events applies only those.
- Classification follows our rules, not the provider's words alone: a "permanent" failure
  that is a policy rejection (5.7.x, DMARC, blocked) suppresses nobody.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.bounces.actions import record_bounce
from mailer.bounces.attribute import Attribution, attribute_event
from mailer.bounces.classify import basic_code, classify, enhanced_status
from mailer.bounces.models import BounceClass, WebhookEvent
from mailer.config import BounceSettings
from mailer.db import utcnow

#: The largest request body a webhook reads (SendGrid batches are the largest, ~1 MB).
MAX_BODY_BYTES = 2 * 1024 * 1024


class WebhookRefused(Exception):
    """The request is refused; ``status`` is the 4xx to answer, ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ProviderEvent:
    provider: str
    event_id: str
    #: The provider's name for what happened (bounce, complaint, delivered, deferred…).
    kind: str
    #: What to record; None for events that are not bounces (delivered, opened…).
    bounce_class: BounceClass | None
    recipient: str = ""
    status: str = ""
    diagnostic: str = ""
    remote_mta: str = ""
    #: The Message-ID header of the message that bounced, when the provider reports it.
    message_id: str = ""
    excerpt: str = ""

    def __post_init__(self) -> None:
        # A NUL in a provider's text (JSON allows "\u0000") is nothing a reader of it
        # needs, and PostgreSQL cannot store it: dropped from every field, here once.
        for name, value in vars(self).items():
            if isinstance(value, str) and "\x00" in value:
                object.__setattr__(self, name, value.replace("\x00", ""))


@dataclass
class Applied:
    recorded: int = 0
    repeats: int = 0
    ignored: int = 0
    actions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"recorded": self.recorded, "repeats": self.repeats, "ignored": self.ignored,
                "actions": self.actions}


def apply_events(session: Session, provider: str, events: Sequence[ProviderEvent], *,
                 bounces: BounceSettings, keys: Sequence[bytes],
                 replay_token: str | None = None) -> Applied:
    """Record the new events of one request; raise WebhookRefused(409) for a replay.
    ``bounces``: the soft-bounce rule; ``keys`` (``Settings.all_secrets``) check the
    Message-IDs the events report.

    ``replay_token`` is a value that must never be seen twice (Mailgun's signature token);
    it is remembered in the same transaction, so a request that failed half-way can be
    retried with it.
    """
    if replay_token is not None and not _remember(session, f"{provider}-token", replay_token,
                                                  "token", ""):
        raise WebhookRefused(409, "replay: this signature token was used before")
    applied = Applied()
    for event in events:
        if not _remember(session, provider, event.event_id, event.kind, event.excerpt):
            applied.repeats += 1
            continue
        if event.bounce_class is None:
            applied.ignored += 1
            continue
        attribution = _attribute(session, event, keys)
        bounce = record_bounce(
            session, bounces=bounces, bounce_class=event.bounce_class, source=provider,
            recipient=event.recipient, status_code=event.status, diagnostic=event.diagnostic,
            remote_mta=event.remote_mta, delivery_id=attribution.delivery_id,
            edition_id=attribution.edition_id, subscriber_id=attribution.subscriber_id,
            attribution=attribution.method, attribution_note=attribution.note,
            raw_excerpt=event.excerpt,
            fingerprint=hashlib.sha256(f"{provider}\x00{event.event_id}".encode()).hexdigest(),
        )
        if bounce is None:
            applied.repeats += 1
            continue
        applied.recorded += 1
        applied.actions.append(f"{bounce.bounce_class} {bounce.recipient}: {bounce.action}")
    if events and applied.repeats == len(events):
        raise WebhookRefused(409, "replay: every event of this request was applied before")
    return applied


def _remember(session: Session, provider: str, event_id: str, kind: str, excerpt: str) -> bool:
    """Note an event id as seen; False when it was seen before."""
    try:
        with session.begin_nested():
            session.add(WebhookEvent(provider=provider[:16], event_id=event_id[:255],
                                     kind=kind[:32], payload_excerpt=excerpt[:4000]))
            session.flush()
    except IntegrityError:
        return False
    return True


def _attribute(session: Session, event: ProviderEvent, keys: Sequence[bytes]) -> Attribution:
    """Tie an event to a delivery by the Message-ID it reports, else to a known subscriber
    by its address: the request's signature was checked, so the event is authentic."""
    return attribute_event(session, message_id=event.message_id, recipient=event.recipient,
                           keys=keys)


# --- helpers for the provider modules ------------------------------------------------------


def as_message_id(value: object) -> str:
    """A Message-ID as a header holds it, ``<…>`` (Mailgun drops the brackets)."""
    text = as_text(value).strip()
    if text and not text.startswith("<"):
        text = f"<{text}>"
    return text


def failure_class(*, permanent: bool, status: str = "", diagnostic: str = "",
                  code: int | None = None) -> BounceClass:
    """Our class for a failure a provider reports as permanent or temporary (final).

    Our rules decide, as for a DSN: hard only when the mailbox or the domain does not exist,
    policy for blocks and authentication failures, soft otherwise. A temporary failure is
    never hard. (A provider that will try again reports a delay, not a failure: callers
    map those to ``delayed`` themselves.)
    """
    status = status or enhanced_status(diagnostic)
    code = code or basic_code(diagnostic) or (550 if permanent else 450)
    ours = classify(code, status, diagnostic)
    if ours == BounceClass.policy:
        return BounceClass.policy
    if permanent and ours == BounceClass.hard:
        return BounceClass.hard
    return BounceClass.soft


def address_gone(*, status: str = "", diagnostic: str = "") -> BounceClass:
    """A provider says in so many words that the address does not exist (SES NoEmail,
    Postmark HardBounce, SendGrid "Invalid Address"): hard, unless the wording shows a
    policy rejection after all."""
    status = status or enhanced_status(diagnostic)
    if classify(550, status, diagnostic) == BounceClass.policy:
        return BounceClass.policy
    return BounceClass.hard


def excerpt_of(payload: object, limit: int = 4000) -> str:
    try:
        return json.dumps(payload, ensure_ascii=False, default=str)[:limit]
    except (RecursionError, ValueError):
        return "(not shown: nested too deeply)"


# A signed body is still a stranger's JSON: any field may hold any JSON type. The provider
# modules read every field through these, so a list where a text was expected reads as
# nothing rather than raising.

def as_dict(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def dicts(value: object) -> list[dict[str, Any]]:
    """The JSON objects of a list (nothing when ``value`` is not a list)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def as_text(value: object) -> str:
    """A JSON string, number or boolean as text; "" for null, an object or a list."""
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


def as_code(value: object) -> int | None:
    """An SMTP reply code given as a number (or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) == 3:
        value = int(value)
    return value if isinstance(value, int) and 200 <= value <= 599 else None


def check_fresh(timestamp: float, what: str, max_age: float) -> None:
    """Refuse a signed timestamp too far from now (a replay of an old request), or one that
    is not a finite number (``nan`` compares false with everything: it would pass)."""
    if not math.isfinite(timestamp):
        raise WebhookRefused(403, f"{what} is not a finite number")
    window = max_age  # MAILER_WEBHOOK_MAX_AGE_SECONDS
    age = utcnow().timestamp() - timestamp
    if age > window or age < -300:
        raise WebhookRefused(403, f"{what} is {int(age)} s old: outside the "
                                  f"{window} s window (a replay, or a clock out of step)")


def parse_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, an over-long number
        raise WebhookRefused(400, f"the body is not JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise WebhookRefused(400, "the body is not JSON we read: nested too deeply") from None
