"""Postmark's bounce and spam-complaint webhooks, protected by HTTP basic auth.

Postmark signs nothing; the webhook URL is configured with a user and password
(``https://user:password@…/webhooks/postmark``) that must match
``MAILER_POSTMARK_WEBHOOK_USER`` / ``_PASSWORD``. Each record carries its ``ID``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any

from mailer.bounces.models import BounceClass
from mailer.bounces.webhooks import (
    ProviderEvent,
    WebhookRefused,
    address_gone,
    as_text,
    excerpt_of,
    failure_class,
    parse_json,
)
from mailer.config import BounceSettings

PROVIDER = "postmark"

_GONE = {"HardBounce", "BadEmailAddress"}
_SOFT = {"SoftBounce", "Transient", "DnsError"}
_TYPES: dict[str, BounceClass | None] = {
    "Blocked": BounceClass.policy,
    "DMARCPolicy": BounceClass.policy,
    "SpamNotification": BounceClass.policy,  # the receiving server took it for spam
    "AutoResponder": BounceClass.autoreply,
    "SpamComplaint": BounceClass.complaint,
    "Unknown": BounceClass.unparsed,
}


def check_auth(headers: Mapping[str, str], bounces: BounceSettings) -> None:
    user, password = bounces.postmark_webhook_user, bounces.postmark_webhook_password
    if not user or password is None:
        raise WebhookRefused(403, "the Postmark webhook is not configured "
                                  "(MAILER_POSTMARK_WEBHOOK_USER and _PASSWORD)")
    scheme, _, value = headers.get("authorization", "").partition(" ")
    try:
        decoded = base64.b64decode(value, validate=True).decode()
        given_user, _, given_password = decoded.partition(":")
    except (binascii.Error, UnicodeDecodeError):
        given_user = given_password = ""
    # Both compared in constant time, whatever the first answer.
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    password_ok = hmac.compare_digest(given_password.encode(),
                                      password.get_secret_value().encode())
    if not (scheme.lower() == "basic" and user_ok and password_ok):
        raise WebhookRefused(401, "wrong or missing basic auth for the Postmark webhook")


def events_from(body: bytes, headers: Mapping[str, str],
                bounces: BounceSettings) -> list[ProviderEvent]:
    check_auth(headers, bounces)
    record = parse_json(body)
    if not isinstance(record, dict):
        raise WebhookRefused(400, "a Postmark webhook posts a JSON object")
    record_type = as_text(record.get("RecordType"))
    record_id = as_text(record.get("ID")) or as_text(record.get("MessageID"))
    if not record_id:
        raise WebhookRefused(400, "the Postmark record has no ID")
    if record_type == "SpamComplaint":
        klass: BounceClass | None = BounceClass.complaint
    elif record_type == "Bounce":
        klass = _bounce_class(record)
    else:
        klass = None  # Delivery, Open, Click, SubscriptionChange
    return [ProviderEvent(
        provider=PROVIDER, event_id=f"{record_type}:{record_id}",
        kind=(as_text(record.get("Type")) or record_type).lower(), bounce_class=klass,
        recipient=as_text(record.get("Email")),
        diagnostic=as_text(record.get("Details")) or as_text(record.get("Description")),
        excerpt=excerpt_of(record),
    )]


def _bounce_class(record: dict[str, Any]) -> BounceClass | None:
    kind = as_text(record.get("Type"))
    details = as_text(record.get("Details")) or as_text(record.get("Description"))
    if kind in _GONE:
        return address_gone(diagnostic=details)
    if kind in _SOFT:
        return failure_class(permanent=False, diagnostic=details)
    # Subscribe, Unsubscribe, AddressChange, ManuallyDeactivated…: not a bounce.
    return _TYPES.get(kind)
