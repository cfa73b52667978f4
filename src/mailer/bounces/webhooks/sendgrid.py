"""SendGrid's signed Event Webhook.

SendGrid signs ``timestamp + body`` with ECDSA (P-256, SHA-256) and sends the signature
and the timestamp in ``X-Twilio-Email-Event-Webhook-Signature`` / ``-Timestamp``; the
verification key is the one SendGrid shows when signing is switched on
(``MAILER_SENDGRID_PUBLIC_KEY``, base64 DER as shown, or PEM). The body is a JSON list of
events, each with its ``sg_event_id``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailer.bounces.models import BounceClass
from mailer.bounces.webhooks import (
    ProviderEvent,
    WebhookRefused,
    address_gone,
    as_message_id,
    as_text,
    check_fresh,
    excerpt_of,
    failure_class,
    parse_json,
)
from mailer.config import BounceSettings

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

#: ``dropped``: SendGrid did not even try, and says why.
_DROPPED = {
    "Bounced Address": BounceClass.hard,  # on SendGrid's bounce list
    "Invalid": BounceClass.hard,  # not a valid address
    "Spam Reporting Address": BounceClass.complaint,
    "Spam Content (if spam checker app enabled)": BounceClass.policy,
}
#: ``bounce_classification`` of a bounce event, where it settles the question.
_POLICY_CLASSIFICATIONS = {"Reputation", "Content", "Frequency or Volume"}


@lru_cache(maxsize=4)
def _public_key(text: str) -> ec.EllipticCurvePublicKey:
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text))
    except (ValueError, binascii.Error) as exc:
        raise WebhookRefused(500, f"MAILER_SENDGRID_PUBLIC_KEY cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WebhookRefused(500, "MAILER_SENDGRID_PUBLIC_KEY is not an ECDSA key")
    return key


def verify(body: bytes, headers: Mapping[str, str], bounces: BounceSettings) -> None:
    configured = bounces.sendgrid_public_key
    if not configured:
        raise WebhookRefused(403, "the SendGrid webhook is not configured "
                                  "(MAILER_SENDGRID_PUBLIC_KEY)")
    signature, timestamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise WebhookRefused(403, f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
    try:
        _public_key(configured.strip()).verify(
            base64.b64decode(signature, validate=True), timestamp.encode() + body,
            ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise WebhookRefused(403, "the SendGrid signature does not match") from None
    try:
        check_fresh(float(timestamp), "the SendGrid timestamp", bounces.webhook_max_age_seconds)
    except ValueError:
        raise WebhookRefused(403, "the SendGrid timestamp is not a number") from None


def events_from(body: bytes, headers: Mapping[str, str],
                bounces: BounceSettings) -> list[ProviderEvent]:
    verify(body, headers, bounces)
    payload = parse_json(body)
    if not isinstance(payload, list):
        raise WebhookRefused(400, "a SendGrid event webhook posts a JSON list")
    return [_event(e) for e in payload if isinstance(e, dict)]


def _event(event: dict[str, Any]) -> ProviderEvent:
    kind = as_text(event.get("event")) or "unknown"
    event_id = as_text(event.get("sg_event_id")) or hashlib.sha256(
        json.dumps(event, sort_keys=True).encode()).hexdigest()
    status = as_text(event.get("status"))
    reason = as_text(event.get("reason")) or as_text(event.get("response"))
    return ProviderEvent(
        provider=PROVIDER, event_id=event_id, kind=kind, bounce_class=_class_of(event, kind),
        recipient=as_text(event.get("email")), status=status, diagnostic=reason,
        message_id=as_message_id(event.get("smtp-id")), excerpt=excerpt_of(event),
    )


def _class_of(event: dict[str, Any], kind: str) -> BounceClass | None:
    status = as_text(event.get("status"))
    reason = as_text(event.get("reason")) or as_text(event.get("response"))
    if kind == "bounce":
        classification = as_text(event.get("bounce_classification"))
        if classification == "Invalid Address":
            return address_gone(status=status, diagnostic=reason)
        if event.get("type") == "blocked" or classification in _POLICY_CLASSIFICATIONS:
            ours = failure_class(permanent=True, status=status, diagnostic=reason)
            return ours if ours == BounceClass.hard else BounceClass.policy
        return failure_class(permanent=True, status=status, diagnostic=reason)
    if kind == "dropped":
        return _DROPPED.get(reason)
    if kind == "deferred":
        return BounceClass.delayed  # SendGrid tries again: a warning, not a bounce
    if kind == "spamreport":
        return BounceClass.complaint
    return None  # processed, delivered, open, click, unsubscribe…
