"""Walking the MIME tree: which part is report fields, which is the human-readable report,
which is the quoted original.

Nothing inside the quoted original is read as report: a bounce of a bounce, or a newsletter
that mentions "undeliverable", must not confuse the reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from mailer.bounces.parse.decoding import TEXT_LIMIT, decoded_text, header_text, html_to_text
from mailer.bounces.parse.dsn import fields_text
from mailer.bounces.parse.original import Original, before_cut, from_headers

#: MIME nesting deeper than this is not a bounce, it is an attack on the parser.
MAX_DEPTH = 20

DSN_TYPES = {"message/delivery-status", "message/global-delivery-status"}
ARF_TYPE = "message/feedback-report"
ORIGINAL_TYPES = {"message/rfc822", "message/global", "message/partial"}
ORIGINAL_HEADER_TYPES = {"text/rfc822-headers", "message/global-headers"}


@dataclass
class Parts:
    """A message's parts, sorted by what they are to a bounce reader."""

    dsn_texts: list[str] = field(default_factory=list)
    arf_texts: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    original: Original = field(default_factory=Original)
    #: A report attached as a whole (a bounce forwarded as message/rfc822), else None.
    attached_report: Message | None = None

    def full_text(self) -> str:
        """The readable text of the message (the plain parts, else the HTML ones)."""
        text = "\n".join(self.texts) or "\n".join(html_to_text(h) for h in self.htmls)
        return text[: 4 * TEXT_LIMIT]

    def report_text(self) -> str:
        """The human-readable part of the report, without the quoted original."""
        return before_cut(self.full_text())[:TEXT_LIMIT]


def sort_parts(msg: Message) -> Parts:
    parts = Parts()
    _collect(parts, msg, depth=0)
    return parts


def _collect(parts: Parts, part: Message, depth: int) -> None:
    if depth > MAX_DEPTH:
        return
    ctype = part.get_content_type()
    if ctype in DSN_TYPES:
        parts.dsn_texts.append(fields_text(part))
    elif ctype == ARF_TYPE:
        parts.arf_texts.append(fields_text(part))
    elif ctype in ORIGINAL_TYPES or ctype in ORIGINAL_HEADER_TYPES:
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            if parts.attached_report is None and depth and is_report(payload[0]):
                parts.attached_report = payload[0]
            else:
                _note_original(parts, payload[0])
        elif ctype in ORIGINAL_HEADER_TYPES:
            _note_original(parts, HeaderParser().parsestr(decoded_text(part)))
    elif part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Message):
                _collect(parts, sub, depth + 1)
    elif ctype == "text/plain" or part.get_content_maintype() == "multipart":
        # A multipart whose boundary is missing or wrong arrives as one string: its
        # text is all we have, so it is read as the report.
        parts.texts.append(decoded_text(part))
    elif ctype == "text/html":
        parts.htmls.append(decoded_text(part))


def is_report(msg: Message) -> bool:
    """A delivery or feedback report as a whole message (not a message that bounced)."""
    return msg.get_content_type() == "multipart/report" or any(
        sub.get_content_type() in DSN_TYPES or sub.get_content_type() == ARF_TYPE
        for sub in msg.walk())


def _note_original(parts: Parts, headers: Message) -> None:
    if not parts.original.known:  # the first original is the one that bounced
        parts.original = from_headers(headers)


#: Where a mail was delivered to, most reliable first: where a VERP token is looked for.
_ADDRESSED_TO = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To",
                 "X-Delivered-To", "X-Rcpt-To", "To", "Cc")


def addressed_to(msg: Message, envelope_to: list[str]) -> list[str]:
    found: list[str] = []
    values = list(envelope_to)
    for name in _ADDRESSED_TO:
        values.extend(header_text(v) for v in msg.get_all(name, []))
    for _, value in getaddresses(values):
        value = value.strip().strip("<>")
        if "@" in value and value.lower() not in (a.lower() for a in found):
            found.append(value)
    return found
