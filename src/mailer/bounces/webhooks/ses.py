"""Amazon SES bounce and complaint notifications, delivered by Amazon SNS.

SNS signs every message with a certificate it serves from its own host; we check:

- the topic (``TopicArn``) is one of ``MAILER_SES_TOPIC_ARNS`` (a JSON list);
- the certificate URL is ``https://sns.<region>.amazonaws.com/….pem`` (anything else would
  let a forger sign with a certificate of their own), the certificate is in its validity
  period, and the RSA signature (SignatureVersion 1: SHA1, 2: SHA256) over the message's
  canonical fields matches;
- the timestamp is within ``webhook_max_age_seconds``.

A ``SubscriptionConfirmation`` (the first message of a new subscription) is confirmed by
fetching its SubscribeURL, which must be on the same SNS host. Certificates are fetched
through :class:`SNSFetcher`, which caches them per URL; tests install a fetcher of their
own with :func:`use_fetcher` (there is no network at test time).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer.bounces.models import BounceClass
from mailer.bounces.webhooks import (
    ProviderEvent,
    WebhookRefused,
    address_gone,
    as_dict,
    as_message_id,
    as_text,
    check_fresh,
    dicts,
    excerpt_of,
    failure_class,
    parse_json,
)
from mailer.config import BounceSettings
from mailer.db import utcnow

log = logging.getLogger(__name__)

PROVIDER = "ses"
_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                "TopicArn", "Type"),
}
#: Permanent bounce sub-types that say the address does not exist (or SES knows it bounced).
_GONE = {"NoEmail", "Suppressed", "OnAccountSuppressionList"}


def is_sns_url(url: str, *, pem: bool = False) -> bool:
    """True for https://sns.<region>.amazonaws.com/… (and .pem when ``pem``), nothing else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and not parts.username and not parts.password
            and port in (None, 443) and bool(_SNS_HOST.match(parts.hostname or ""))
            and (not pem or parts.path.endswith(".pem")))


def _https_get(url: str) -> bytes:
    response = httpx.get(url, timeout=10, follow_redirects=False)
    response.raise_for_status()
    return response.content[:256 * 1024]


class SNSFetcher:
    """Fetches from SNS's host: signing certificates (cached per URL) and subscription
    confirmations. ``get(url) -> bytes`` does the HTTP; only SNS URLs ever reach it."""

    def __init__(self, get: Callable[[str], bytes] = _https_get) -> None:
        self._get = get
        self._certificates: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def certificate(self, url: str) -> x509.Certificate:
        if not is_sns_url(url, pem=True):
            raise WebhookRefused(403, f"signing certificate URL is not on SNS's host: {url!r}")
        with self._lock:
            cached = self._certificates.get(url)
        if cached is None:
            try:
                cached = x509.load_pem_x509_certificate(self._get(url))
            except (httpx.HTTPError, ValueError) as exc:
                raise WebhookRefused(403, f"cannot load the signing certificate: {exc}") from None
            with self._lock:
                self._certificates[url] = cached
        now = utcnow()
        if not cached.not_valid_before_utc <= now <= cached.not_valid_after_utc:
            raise WebhookRefused(403, "the signing certificate is outside its validity period")
        return cached

    def confirm(self, url: str) -> None:
        if not is_sns_url(url):
            raise WebhookRefused(403, f"SubscribeURL is not on SNS's host: {url!r}")
        try:
            self._get(url)
        except httpx.HTTPError as exc:
            raise WebhookRefused(502, f"could not confirm the subscription: {exc}") from None


_fetcher = SNSFetcher()


def use_fetcher(fetcher: SNSFetcher) -> SNSFetcher:
    """Install the fetcher the webhook uses; returns the one it replaces."""
    global _fetcher
    previous, _fetcher = _fetcher, fetcher
    return previous


def canonical_string(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs: "Name\\nvalue\\n" for each signed field present, in order."""
    fields = _SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise WebhookRefused(400, f"unknown SNS message type {message.get('Type')!r}")
    return "".join(f"{name}\n{message[name]}\n" for name in fields
                   if name in message).encode()


def verify(message: Mapping[str, Any]) -> None:
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(  # noqa: S303 - SNS's v1
        str(message.get("SignatureVersion")))
    if algorithm is None:
        raise WebhookRefused(403, "unknown SNS SignatureVersion")
    certificate = _fetcher.certificate(str(message.get("SigningCertURL", "")))
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookRefused(403, "the signing certificate does not hold an RSA key")
    encoded = message.get("Signature")
    if not isinstance(encoded, str) or not encoded.isascii():
        raise WebhookRefused(403, "the SNS Signature is not a base64 string")
    try:
        signature = base64.b64decode(encoded, validate=True)
        key.verify(signature, canonical_string(message), padding.PKCS1v15(), algorithm)
    except (InvalidSignature, binascii.Error):
        raise WebhookRefused(403, "the SNS signature does not match") from None


def events_from(body: bytes, headers: Mapping[str, str],
                bounces: BounceSettings) -> list[ProviderEvent]:
    """Check an SNS request (its topic one of ``bounces.ses_topic_arns``) and return its
    events ([] for a subscription message)."""
    message = parse_json(body)
    if not isinstance(message, dict):
        raise WebhookRefused(400, "an SNS message is a JSON object")
    kind = str(message.get("Type", ""))
    announced = headers.get("x-amz-sns-message-type")
    if announced and announced != kind:
        raise WebhookRefused(400, "x-amz-sns-message-type does not match the message")
    topics = bounces.ses_topic_arns
    if message.get("TopicArn") not in topics:
        raise WebhookRefused(403, f"topic {message.get('TopicArn')!r} is not in "
                                  "MAILER_SES_TOPIC_ARNS")
    verify(message)
    try:
        sent = dt.datetime.fromisoformat(str(message.get("Timestamp")))
    except ValueError:
        raise WebhookRefused(400, "the SNS Timestamp is not a date") from None
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=dt.UTC)
    check_fresh(sent.timestamp(), "the SNS message", bounces.webhook_max_age_seconds)

    if kind == "SubscriptionConfirmation":
        _fetcher.confirm(str(message.get("SubscribeURL", "")))
        log.info("confirmed the SNS subscription to %s", message["TopicArn"])
        return []
    if kind == "UnsubscribeConfirmation":
        log.warning("SNS says the subscription to %s was removed", message["TopicArn"])
        return []
    try:
        notification = json.loads(str(message.get("Message", "")))
    except json.JSONDecodeError:
        raise WebhookRefused(400, "the SNS Message is not SES JSON") from None
    if not isinstance(notification, dict):
        raise WebhookRefused(400, "the SNS Message is not SES JSON")
    return ses_events(str(message.get("MessageId", "")), notification)


def ses_events(sns_id: str, notification: dict[str, Any]) -> list[ProviderEvent]:
    """The events of one SES notification (one per bounced or complaining recipient)."""
    kind = as_text(notification.get("notificationType")) or as_text(notification.get("eventType"))
    mail = as_dict(notification.get("mail"))
    message_id = _original_message_id(mail)
    excerpt = excerpt_of(notification)

    def event(suffix: str, klass: BounceClass | None, **fields: str) -> ProviderEvent:
        return ProviderEvent(provider=PROVIDER, event_id=f"{sns_id}:{suffix}",
                             kind=kind.lower() or "unknown", bounce_class=klass,
                             message_id=message_id, excerpt=excerpt, **fields)

    if kind == "Bounce":
        bounce = as_dict(notification.get("bounce"))
        bounce_type = as_text(bounce.get("bounceType"))
        permanent = bounce_type == "Permanent"
        sub_type = as_text(bounce.get("bounceSubType"))
        remote = as_text(bounce.get("reportingMTA"))
        events = []
        klass: BounceClass | None
        for rcpt in dicts(bounce.get("bouncedRecipients")):
            address = as_text(rcpt.get("emailAddress"))
            status = as_text(rcpt.get("status"))
            diagnostic = as_text(rcpt.get("diagnosticCode")) or f"SES {bounce_type}/{sub_type}"
            if permanent and sub_type in _GONE:
                klass = address_gone(status=status, diagnostic=diagnostic)
            elif bounce_type == "Transient" and sub_type in ("ContentRejected",
                                                             "AttachmentRejected"):
                klass = BounceClass.policy
            else:
                klass = failure_class(permanent=permanent, status=status, diagnostic=diagnostic)
            events.append(event(address, klass, recipient=address, status=status,
                                diagnostic=diagnostic, remote_mta=remote))
        return events
    if kind == "Complaint":
        complaint = as_dict(notification.get("complaint"))
        feedback = as_text(complaint.get("complaintFeedbackType")) or "abuse"
        # "not-spam": the reader took it out of the spam folder; nothing to hold against us.
        klass = None if feedback == "not-spam" else BounceClass.complaint
        return [event(as_text(r.get("emailAddress")), klass,
                      recipient=as_text(r.get("emailAddress")),
                      diagnostic=f"complaint via SES: {feedback}")
                for r in dicts(complaint.get("complainedRecipients"))]
    return [event(kind.lower() or "unknown", None)]  # Delivery, Send, Open…: nothing to do


def _original_message_id(mail: Mapping[str, Any]) -> str:
    for header in dicts(mail.get("headers")):
        if as_text(header.get("name")).lower() == "message-id":
            return as_message_id(header.get("value"))
    return as_message_id(as_dict(mail.get("commonHeaders")).get("messageId"))
