"""Building messages that meet the standards every message is held to.

Headers are decided here and nowhere else: From, To, Subject, Date, Message-ID, and for
newsletters List-Unsubscribe (+ One-Click), List-Id and Precedence. The bulk path in
``mailer.delivery.assembly`` reuses :func:`newsletter_headers`, :func:`message_id`,
:func:`header_safe`, :func:`split_from` and :data:`SMTP_POLICY`.
"""

from __future__ import annotations

import email.policy
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING

from mailer.config import IdentitySettings
from mailer.db import utcnow
from mailer.emails.kinds import MessageKind, message_id_prefix
from mailer.tokens import sign, verify

if TYPE_CHECKING:
    from mailer.emails.dkim import DkimSigner

#: CRLF line ends and headers folded at 78 characters, as RFC 5322 wants on the wire.
SMTP_POLICY = email.policy.SMTP.clone(max_line_length=78)


#: Message-IDs carry an HMAC of what they name, so nobody without the secret key can make
#: one we accept: a bounce quoting a Message-ID acts only when it really is one we sent.
_MID_PURPOSE = "message-id"
_MID_SIG_LEN = 26  # 130 bits of lowercase base32 (survives case-folding mail systems)


def message_id(kind: MessageKind | str, *parts: object, identity: IdentitySettings,
               keys: Sequence[bytes]) -> str:
    """A deterministic, signed Message-ID: ``<kind.part….signature@sending domain>`` (the
    domain of ``identity.from_address``).

    The same message retried keeps its id (the signature is over the kind and the parts).
    Signed with the first of ``keys`` (``Settings.all_secrets``, the current secret key);
    :func:`parse_message_id` also accepts the others (``MAILER_OLD_SECRET_KEYS``), so
    bounces of mail sent before a rotation still tie.
    """
    value = ".".join([message_id_prefix(kind), *map(str, parts)])
    signature = sign(_MID_PURPOSE, value, _MID_SIG_LEN, alphabet="b32", keys=keys)
    return f"<{value}.{signature}@{identity.sending_domain}>"


def parse_message_id(value: str, *, keys: Sequence[bytes]) -> tuple[str, list[str]] | None:
    """The kind as spelled on the wire and the parts of a Message-ID this service made, or
    None (not ours, or altered); :func:`~mailer.emails.kinds.of_message_id_prefix` names
    the kind.

    ``<nl.12.3456.<signature>@domain>`` → ("nl", ["12", "3456"]). The signature is an HMAC
    keyed with the secret: a made-up id (sequential delivery ids, the unkeyed digest the ids
    carried before) attributes nothing.
    """
    local = _local_part(value)
    if local is None:
        return None
    head, _, signature = local.lower().rpartition(".")
    kind, _, rest = head.partition(".")
    if not (kind and rest) or len(signature) != _MID_SIG_LEN:
        return None
    if not verify(_MID_PURPOSE, head, signature, alphabet="b32", keys=keys):
        return None
    return kind, rest.split(".")


def looks_like_ours(value: str, *, sending_domain: str) -> bool:
    """A Message-ID at our ``sending_domain`` (``identity.sending_domain``, signed or not):
    one whose signature fails is a forgery, not someone else's mail."""
    value = value.strip()
    domain = value[1:-1].rpartition("@")[2] if value.endswith(">") else ""
    return _local_part(value) is not None and domain.lower() == sending_domain.lower()


def _local_part(value: str) -> str | None:
    value = value.strip()
    if not (value.startswith("<") and value.endswith(">") and "@" in value):
        return None
    return value[1:-1].rsplit("@", 1)[0]


def newsletter_headers(unsubscribe_url: str, identity: IdentitySettings) -> list[tuple[str, str]]:
    return [
        ("List-Unsubscribe", f"<{unsubscribe_url}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("List-Id", f"{header_safe(identity.list_name)} <{identity.list_id}>"),
        ("Precedence", "bulk"),
    ]


def header_safe(value: str) -> str:
    """Strip CR, LF and other control characters: nothing can inject a header."""
    return "".join(ch for ch in value if ch >= " " and ch != "\x7f").strip()


def build_message(
    *,
    identity: IdentitySettings,
    to_email: str,
    subject: str,
    text: str,
    html: str,
    msg_id: str,
    extra_headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    """A multipart/alternative message: text/plain first, text/html last; with
    ``attachments``, that part is the first of a multipart/mixed and they follow it."""
    msg = EmailMessage(policy=SMTP_POLICY)
    from_name, from_email = split_from(identity.from_address)
    msg["From"] = Address(display_name=from_name, addr_spec=from_email)
    # The address alone: nothing a reader typed into a form ever reaches a header.
    msg["To"] = to_email
    msg["Subject"] = header_safe(subject)
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = msg_id
    if identity.reply_to:
        msg["Reply-To"] = identity.reply_to
    for name, value in extra_headers:
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        msg.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                           filename=attachment.filename)
    return msg


@dataclass(frozen=True)
class Attachment:
    """A file sent with a message (the reader's data export): bytes, sent base64."""

    filename: str
    content_type: str
    data: bytes


def split_from(value: str) -> tuple[str, str]:
    from email.utils import parseaddr

    name, addr = parseaddr(value)
    return header_safe(name), addr


def to_bytes(msg: EmailMessage, signer: DkimSigner | None) -> bytes:
    """The bytes to send: serialised with CRLF, DKIM-signed when there is a ``signer``."""
    raw = msg.as_bytes(policy=SMTP_POLICY)
    return signer.sign(raw) if signer else raw
