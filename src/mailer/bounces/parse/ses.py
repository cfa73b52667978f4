"""Amazon SES notifications that arrive by mail: a JSON body instead of a DSN.

An SNS topic subscribed by email delivers each SES notification as a mail from
``no-reply@sns.amazonaws.com``: with the ``email-json`` protocol the body is the SNS
envelope (``{"Type": "Notification", "Message": "<the notification as a string>"}``),
with the ``email`` protocol it is the notification itself followed by SNS's footer.
Either way the notification is SES's documented JSON: ``notificationType`` (or, from event
publishing, ``eventType``) Bounce, Complaint or Delivery, the failed recipients with their
status and diagnostic, and under ``mail`` the headers of the message we sent.

The verdict per recipient is ours, from the status and diagnostic SES relays: SES calls
every 5xx "Permanent", and a 550 5.7.1 block is still the sender's problem.

Nothing here checks a signature: mail from SNS is no more trustworthy than any other mail.
It is tied to a reader only as every bounce by mail is, by what we signed (the Message-ID
or the return path it quotes). Signed SES events come in through the webhook instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mailer.bounces.classes import BounceClass
from mailer.bounces.classify import explain
from mailer.bounces.parse.decoding import address
from mailer.bounces.parse.report import FailedRecipient

_TYPES = ("Bounce", "Complaint", "Delivery", "Send", "Reject", "Open", "Click",
          "DeliveryDelay", "RenderingFailure", "Subscription")


@dataclass
class SesNotification:
    kind: str  # "ses" for a bounce or complaint, "not-a-bounce" for the rest
    recipients: list[FailedRecipient] = field(default_factory=list)
    message_id: str = ""  # our Message-ID, from the headers SES quotes
    return_path: str = ""
    feedback_type: str = ""


def looks_like_ses(sender: str, text: str) -> bool:
    head = text.lstrip()[:2000]
    return head.startswith("{") and (
        sender.lower().endswith("@sns.amazonaws.com") or '"notificationType"' in head
        or '"eventType"' in head)


def read_ses(text: str) -> SesNotification | None:
    """The notification in a mail body, or None when the body is no SES JSON."""
    notification = _notification(text.strip())
    if notification is None:
        return None
    kind = notification.get("notificationType") or notification.get("eventType")
    if kind not in _TYPES:
        return None
    mail = _dict(notification.get("mail"))
    result = SesNotification(kind="not-a-bounce", message_id=_header(mail, "Message-ID"),
                             return_path=address(_header(mail, "Return-Path")))
    if kind == "Bounce":
        result.kind = "ses"
        result.recipients = _bounced(_dict(notification.get("bounce")))
    elif kind == "Complaint":
        complaint = _dict(notification.get("complaint"))
        result.kind = "ses"
        result.feedback_type = str(complaint.get("complaintFeedbackType") or "")
        reported = f"complaint ({result.feedback_type or 'no feedback type'}) reported by SES"
        agent = complaint.get("userAgent")
        if agent:
            reported += f" from {agent}"
        result.recipients = [
            FailedRecipient(address(str(r.get("emailAddress", ""))), "", "", "", reported[:500],
                            "", BounceClass.complaint)
            for r in _list(complaint.get("complainedRecipients"))] or [
            FailedRecipient("", "", "", "", reported[:500], "", BounceClass.complaint)]
    if not result.message_id:
        common = _dict(mail.get("commonHeaders"))
        result.message_id = str(common.get("messageId") or "")
    return result


def _notification(text: str) -> dict[str, Any] | None:
    try:
        data, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        try:
            inner = json.loads(data["Message"])
        except ValueError:
            return None
        return inner if isinstance(inner, dict) else None
    return data


def _bounced(bounce: dict[str, Any]) -> list[FailedRecipient]:
    bounce_type = str(bounce.get("bounceType") or "")
    sub_type = str(bounce.get("bounceSubType") or "")
    recipients = []
    for item in _list(bounce.get("bouncedRecipients")):
        recipient = address(str(item.get("emailAddress", "")))
        status = str(item.get("status") or "")
        diagnostic = " ".join(str(item.get("diagnosticCode") or "").split())
        if diagnostic.lower().startswith("smtp;"):
            diagnostic = diagnostic[5:].strip()
        verdict = explain(None, status, diagnostic, recipient=recipient,
                          final=item.get("action", "failed") == "failed")
        klass, strength = verdict.bounce_class, verdict.strength
        if not verdict.explained:
            # SES's own words: "NoEmail" means it found no such address; the rest of a
            # permanent bounce without a reason is counted, not trusted.
            if bounce_type == "Permanent" and sub_type == "NoEmail":
                klass, strength = BounceClass.hard, "weak"
            elif bounce_type == "Transient" and sub_type in ("MailboxFull", "MessageTooLarge"):
                klass = BounceClass.soft
        if bounce_type == "Transient" and klass == BounceClass.hard:
            klass, strength = BounceClass.soft, ""  # SES will not call a retry permanent
        recipients.append(FailedRecipient(
            recipient=recipient, original_recipient="", action=str(item.get("action", "")),
            status=verdict.status,
            diagnostic=(diagnostic or f"SES {bounce_type}/{sub_type}")[:2000],
            remote_mta=str(bounce.get("reportingMTA") or "").removeprefix("dsn;").strip()[:255],
            bounce_class=klass, strength=strength if klass == BounceClass.hard else ""))
    return recipients


def _header(mail: dict[str, Any], name: str) -> str:
    for header in _list(mail.get("headers")):
        if str(header.get("name", "")).lower() == name.lower():
            return str(header.get("value", ""))
    return ""


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
