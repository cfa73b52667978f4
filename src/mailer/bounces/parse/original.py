"""The quoted original message: its Message-ID and return path tie the bounce to us.

A report quotes the message that bounced (a ``message/rfc822`` part, its headers only, or
pasted as text after a line like "----- Original message -----"). Nothing in it is ever
read as the report: a newsletter that mentions "undeliverable" must not confuse the parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses

from mailer.bounces import patterns
from mailer.bounces.parse.decoding import TEXT_LIMIT, address, header_text


@dataclass
class Original:
    """What the quoted original message tells: our Message-ID and our return path."""

    message_id: str = ""
    return_path: str = ""
    recipients: list[str] = field(default_factory=list)  # its To, or the provider's note
    senders: list[str] = field(default_factory=list)  # From, Reply-To, Sender: never a failure

    @property
    def known(self) -> bool:
        return bool(self.message_id or self.return_path or self.recipients)


MESSAGE_ID = patterns.compile(r"<[^<>\s]+@[^<>\s]+>")


def from_headers(headers: Message) -> Original:
    def values(name: str) -> list[str]:
        return [header_text(v) for v in headers.get_all(name, [])]

    ids = MESSAGE_ID.findall(" ".join(values("Message-ID")))
    return_path = address(" ".join(values("Return-Path")))
    recipients = [a for _, a in getaddresses(values("X-HmXmrOriginalRecipient"))]
    recipients += [a for _, a in getaddresses(values("To")) if real_address(a)]
    senders = [a for _, a in getaddresses(values("From") + values("Reply-To") + values("Sender"))]
    return Original(
        message_id=ids[0] if ids else "", return_path=return_path,
        recipients=[a for a in dict.fromkeys(recipients) if "@" in a],
        senders=[a for a in senders if "@" in a],
    )


_QUOTED_HEADER = patterns.compile(
    r"^(Message-ID|Return-Path|To|From|Reply-To|Sender|X-HmXmrOriginalRecipient)[ \t]*:[ \t]*(.*)$",
    re.IGNORECASE | re.MULTILINE,
)


def from_text(text: str) -> Original:
    """The original's headers quoted in the body of a one-part bounce."""
    found: dict[str, list[str]] = {}
    for match in _QUOTED_HEADER.finditer(text[:TEXT_LIMIT]):
        found.setdefault(match.group(1).lower(), []).append(match.group(2))
    ids = MESSAGE_ID.findall(" ".join(found.get("message-id", [])[:1]))
    recipients = [a for _, a in getaddresses(found.get("x-hmxmroriginalrecipient", []))]
    recipients += [a for _, a in getaddresses(found.get("to", [])[:1]) if real_address(a)]
    senders = [a for _, a in getaddresses(
        found.get("from", [])[:1] + found.get("reply-to", [])[:1] + found.get("sender", [])[:1])]
    return Original(
        message_id=ids[0] if ids else "",
        return_path=address((found.get("return-path") or [""])[0]),
        recipients=[a for a in dict.fromkeys(recipients) if "@" in a],
        senders=[a for a in senders if "@" in a],
    )


def real_address(value: str) -> bool:
    """Not a provider's placeholder for a redacted recipient (AOL: ``redacted@aol.com``)."""
    return "@" in value and not re.search(r"redacted|x{4,}|\*{3,}", value, re.IGNORECASE)


def in_reply_to(msg: Message) -> str:
    """Gmail's bounces and every auto-reply name our message in In-Reply-To / References."""
    for name in ("In-Reply-To", "References"):
        ids = MESSAGE_ID.findall(header_text(msg.get(name)))
        if ids:
            return ids[0] if name == "In-Reply-To" else ids[-1]
    return ""


_VERP_IN_BODY = patterns.compile(rb"bounces\+[0-9A-Za-z]+-[0-9A-Za-z]+@[\w.-]+")


def verp_in_body(raw: bytes) -> str:
    """A VERP return path quoted anywhere in the body (the original's headers inline)."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        head, sep, body = raw.partition(b"\r\n\r\n")
    match = _VERP_IN_BODY.search(body[: 4 * TEXT_LIMIT]) if sep else None
    return match.group(0).decode("ascii", "replace") if match else ""


#: Where a one-part bounce starts quoting the original message: nothing after it is report.
CUT = patterns.compile(
    r"^[ \t>]*(?:-{2,}|={2,}|\*{2,})?[ \t]*(?:"
    r"this is a copy of the message|below this line is a copy of the message"
    r"|original message|the header of the original message|returned message"
    r"|message headers? follows?|headers? of (the )?original message|unsent message (below|follows)"
    r"|forwarded message|copy of the original message|original message headers"
    r"|undelivered message|the original message headers are included"
    r"|rfc ?822 headers|copie du message|kopie der nachricht|urspr[üu]ngliche nachricht"
    r")[^\n]*$"
    r"|^(?:Received: ?from |Return-Path: ?<|Content-Type: message/rfc822)",
    re.IGNORECASE | re.MULTILINE,
)


def before_cut(text: str) -> str:
    match = CUT.search(text)
    return text[: match.start()] if match else text


def after_cut(text: str) -> str:
    match = CUT.search(text)
    return text[match.start():] if match else ""
