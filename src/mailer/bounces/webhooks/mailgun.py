"""Mailgun's signed webhooks.

The body is ``{"signature": {"timestamp", "token", "signature"}, "event-data": {…}}``; the
signature is the hex HMAC-SHA256 of ``timestamp + token`` keyed with the webhook signing
key (``MAILER_MAILGUN_SIGNING_KEY``). Replays are refused twice over: a timestamp outside
``webhook_max_age_seconds`` is refused, and every token is remembered (a token seen before
is refused), besides the event's own id.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from mailer.bounces.models import BounceClass
from mailer.bounces.webhooks import (
    ProviderEvent,
    WebhookRefused,
    as_code,
    as_dict,
    as_message_id,
    as_text,
    check_fresh,
    excerpt_of,
    failure_class,
    parse_json,
)
from mailer.config import BounceSettings

PROVIDER = "mailgun"

#: ``failed`` events whose ``reason`` says Mailgun did not try, because of its own lists.
_SUPPRESSED = {"suppress-bounce": BounceClass.hard, "suppress-complaint": BounceClass.complaint}


def verify(payload: Mapping[str, Any], bounces: BounceSettings) -> str:
    """Check the signature block with ``bounces``' key; return its token (to be remembered
    against replays)."""
    key = bounces.mailgun_signing_key
    if key is None:
        raise WebhookRefused(403, "the Mailgun webhook is not configured "
                                  "(MAILER_MAILGUN_SIGNING_KEY)")
    block = payload.get("signature")
    if not isinstance(block, dict):
        raise WebhookRefused(403, "the Mailgun signature block is missing")
    timestamp, token, signature = (as_text(block.get(k)) for k in ("timestamp", "token",
                                                                    "signature"))
    if not (timestamp and token and signature):
        raise WebhookRefused(403, "the Mailgun signature block is incomplete")
    expected = hmac.new(key.get_secret_value().encode(),
                        (timestamp + token).encode("utf-8", "surrogatepass"),
                        hashlib.sha256).hexdigest()
    # As bytes: compare_digest refuses a str holding anything but ASCII.
    if not hmac.compare_digest(expected.encode(),
                               signature.lower().encode("utf-8", "surrogatepass")):
        raise WebhookRefused(403, "the Mailgun signature does not match")
    try:
        check_fresh(float(timestamp), "the Mailgun timestamp", bounces.webhook_max_age_seconds)
    except ValueError:
        raise WebhookRefused(403, "the Mailgun timestamp is not a number") from None
    return token


def events_from(body: bytes, headers: Mapping[str, str],
                bounces: BounceSettings) -> tuple[list[ProviderEvent], str]:
    """The events of a request and the signature token it used."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise WebhookRefused(400, "a Mailgun webhook posts a JSON object")
    token = verify(payload, bounces)
    data = payload.get("event-data")
    if not isinstance(data, dict) or not as_text(data.get("id")):
        raise WebhookRefused(400, "the Mailgun event-data (with its id) is missing")
    return [_event(data)], token


def _event(data: dict[str, Any]) -> ProviderEvent:
    kind = as_text(data.get("event")) or "unknown"
    status_block = as_dict(data.get("delivery-status"))
    code = as_code(status_block.get("code"))
    diagnostic = as_text(status_block.get("message")) or as_text(status_block.get("description"))
    status = as_text(status_block.get("enhanced-code"))
    headers = as_dict(as_dict(data.get("message")).get("headers"))
    # Mailgun's ids are unique "within a day": the event's own timestamp makes them unique.
    event_id = f"{as_text(data['id'])}@{as_text(data.get('timestamp'))}"
    return ProviderEvent(
        provider=PROVIDER, event_id=event_id, kind=kind,
        bounce_class=_class_of(data, kind, code, status, diagnostic),
        recipient=as_text(data.get("recipient")), status=status or (str(code) if code else ""),
        diagnostic=diagnostic or as_text(data.get("reason")),
        remote_mta=as_text(status_block.get("mx-host")),
        message_id=as_message_id(as_text(headers.get("message-id"))), excerpt=excerpt_of(data),
    )


def _class_of(data: dict[str, Any], kind: str, code: int | None, status: str,
              diagnostic: str) -> BounceClass | None:
    if kind == "complained":
        return BounceClass.complaint
    if kind != "failed":
        return None  # accepted, delivered, opened, clicked, unsubscribed…
    if data.get("severity") != "permanent":
        return BounceClass.delayed  # Mailgun tries again
    reason = as_text(data.get("reason"))
    if reason in _SUPPRESSED:
        return _SUPPRESSED[reason]
    if reason == "suppress-unsubscribe":
        return None
    return failure_class(permanent=True, status=status, diagnostic=diagnostic, code=code)
