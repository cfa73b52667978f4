"""Turning what arrived into text: header words, charsets, transfer encodings, HTML, addresses.

Bounces come in every charset and in broken ones; nothing here raises on bad input, it
falls back (UTF-8, then Latin-1) and keeps going.
"""

from __future__ import annotations

import contextlib
import html
import re
from email.header import Header, decode_header, make_header
from email.message import Message

from mailer.bounces import patterns

#: The report text the heuristics read: a bounce says what it has to say long before this.
TEXT_LIMIT = 64 * 1024

#: An address; matched only from the start of a run of address characters, so a long run
#: without an "@" costs one attempt, not one per character (hostile input stays linear).
ADDRESS = patterns.compile(
    r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


_LONE_CR = patterns.compile(rb"\r(?!\n)")


def normal_line_ends(raw: bytes) -> bytes:
    """A message stored with CR-only line ends (old Mac clients, some exports) as LF: the
    email package splits its lines, but the patterns that read bodies need line feeds."""
    if raw.count(b"\r") > 2 * raw.count(b"\n"):
        return _LONE_CR.sub(b"\n", raw)
    return raw


def unescape_8bit(value: str) -> str:
    """compat32 keeps raw 8-bit bytes as surrogates: give them back as UTF-8 (or Latin-1)."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    data = value.encode("ascii", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def header_text(value: object) -> str:
    """A header value as readable text: RFC 2047 words decoded, raw UTF-8 accepted."""
    if value is None:
        return ""
    if isinstance(value, Header):  # compat32 wraps raw 8-bit header values in a Header
        chunks = []
        for data, charset in decode_header(value):
            if isinstance(data, str):
                chunks.append(data)
            else:
                chunks.append(bytes_text(data, None if charset == "unknown-8bit" else charset))
        return " ".join("".join(chunks).split())
    text = unescape_8bit(str(value))
    if "=?" in text:
        with contextlib.suppress(Exception):  # a broken encoded word: keep it as it came
            text = str(make_header(decode_header(text)))
    return " ".join(text.split())


def bytes_text(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")


def decoded_text(part: Message) -> str:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        return ""
    # Bodies keep the CRLF they came with; every pattern here reads lines ending in LF.
    return bytes_text(data, part.get_content_charset()).replace("\r\n", "\n").replace("\r", "\n")


_TAG_BREAK = patterns.compile(r"<\s*(br|/p|/div|/tr|/li|/h\d|/table)\b[^>]*>", re.IGNORECASE)
_TAG = patterns.compile(r"<[^>]*>")
_SCRIPT = patterns.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def html_to_text(value: str) -> str:
    value = _SCRIPT.sub(" ", value[: 4 * TEXT_LIMIT])
    value = _TAG_BREAK.sub("\n", value)
    value = html.unescape(_TAG.sub(" ", value))
    return "\n".join(" ".join(line.split()) for line in value.splitlines())


_XTEXT_UNICODE = patterns.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def address(value: str) -> str:
    """An address from a DSN field or a line of text: type prefix and brackets removed,
    RFC 6533 ``\\x{…}`` escapes decoded, the domain lowercased."""
    value = (value or "").strip()
    if ";" in value:
        value = value.split(";", 1)[1]
    value = _XTEXT_UNICODE.sub(lambda m: chr(int(m.group(1), 16)), value)
    value = value.strip().strip("<>\"'").strip()
    match = ADDRESS.search(value)
    if not match:
        return ""
    local, _, domain = match.group(0).rpartition("@")
    return f"{local.strip('.')}@{domain.lower().rstrip('.')}"
