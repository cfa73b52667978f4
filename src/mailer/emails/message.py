"""Building messages that meet the standards every message is held to.

Headers are decided here and nowhere else: From, To, Subject, Date, Message-ID, and for
newsletters List-Unsubscribe (+ One-Click), List-Id and Precedence. The bulk path in
``mailer.delivery.assembly`` reuses :func:`newsletter_headers` and :func:`message_id`.
"""

from __future__ import annotations

import email.policy
import hashlib
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from mailer.config import get_settings
from mailer.db import utcnow

#: CRLF line ends and headers folded at 78 characters, as RFC 5322 wants on the wire.
SMTP_POLICY = email.policy.SMTP.clone(max_line_length=78)


def message_id(kind: str, *parts: object) -> str:
    """A deterministic Message-ID: the same message retried keeps its id."""
    settings = get_settings()
    digest = hashlib.sha256(
        "\x00".join([kind, *map(str, parts), settings.list_id]).encode()
    ).hexdigest()[:24]
    local = ".".join([kind, *map(str, parts), digest])
    return f"<{local}@{settings.sending_domain}>"


def parse_message_id(value: str) -> tuple[str, list[str]] | None:
    """The kind and parts of a Message-ID this service made, or None (not ours, or altered).

    ``<nl.12.3456.<digest>@domain>`` → ("nl", ["12", "3456"]). The digest is checked by
    making the id again, so a bounce quoting a forged Message-ID attributes nothing.
    """
    value = value.strip()
    if not (value.startswith("<") and value.endswith(">") and "@" in value):
        return None
    local = value[1:-1].rsplit("@", 1)[0]
    kind, *parts = local.split(".")
    if len(parts) < 2:
        return None
    parts = parts[:-1]
    if message_id(kind, *parts).lower() != value.lower():
        return None
    return kind, parts


def newsletter_headers(unsubscribe_url: str) -> list[tuple[str, str]]:
    settings = get_settings()
    return [
        ("List-Unsubscribe", f"<{unsubscribe_url}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("List-Id", f"{_header_safe(settings.list_name)} <{settings.list_id}>"),
        ("Precedence", "bulk"),
    ]


def _header_safe(value: str) -> str:
    """Strip CR, LF and other control characters: nothing can inject a header."""
    return "".join(ch for ch in value if ch >= " " and ch != "\x7f").strip()


def build_message(
    *,
    to_email: str,
    subject: str,
    text: str,
    html: str,
    msg_id: str,
    extra_headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> EmailMessage:
    """A multipart/alternative message: text/plain first, text/html last."""
    settings = get_settings()
    msg = EmailMessage(policy=SMTP_POLICY)
    from_name, from_email = _split_from(settings.from_address)
    msg["From"] = Address(display_name=from_name, addr_spec=from_email)
    # The address alone: nothing a reader typed into a form ever reaches a header.
    msg["To"] = to_email
    msg["Subject"] = _header_safe(subject)
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = msg_id
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    for name, value in extra_headers:
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


def _split_from(value: str) -> tuple[str, str]:
    from email.utils import parseaddr

    name, addr = parseaddr(value)
    return _header_safe(name), addr


def to_bytes(msg: EmailMessage) -> bytes:
    """The bytes to send: serialised with CRLF, DKIM-signed when a key is configured."""
    from mailer.emails.dkim import configured_signer

    raw = msg.as_bytes(policy=SMTP_POLICY)
    signer = configured_signer()
    return signer.sign(raw) if signer else raw
