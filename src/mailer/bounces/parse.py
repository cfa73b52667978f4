"""Reading a bounce mail: who failed, how, and why, in the words the server used.

Three layers, the most trustworthy first:

1. Standard reports. RFC 3464 delivery status notifications (``message/delivery-status``,
   and RFC 6533's ``message/global-delivery-status``) carry one block of fields per
   recipient; RFC 5965 ARF complaints carry a ``message/feedback-report``.
2. The bounces real servers still send without those parts (Exim, qmail, old Sendmail,
   Exchange, Domino, GroupWise, Yahoo, hosting providers…). Their texts differ, but the
   failed address always stands out in the same few ways: on a line of its own after
   "The following address(es) failed", as ``<addr>:`` before the reason, in
   ``RCPT TO:<addr>``, in "your message to addr couldn't be delivered". The reason is the
   text next to it. flufl.bounce's detectors are the second opinion on the address.
3. Auto-replies (vacation, out of office, challenge-response) and everything else.

Nothing here raises on a malformed message: what cannot be understood comes back as
``kind="unparsed"`` with the reason in ``error``, so the caller keeps and counts it. Only
input over the size cap is refused, with :class:`BounceTooLarge`.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import functools
import html
import logging
import mailbox
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any

from mailer.bounces.classify import BASIC, ENHANCED, Verdict, explain
from mailer.bounces.models import BounceClass
from mailer.config import get_settings

log = logging.getLogger(__name__)
# flufl.bounce logs every detector that chokes on odd MIME before re-raising; we catch
# those errors and fall back to our own rules, so its tracebacks are noise in the logs.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

EXCERPT_BYTES = 8 * 1024
#: The report text the heuristics read: a bounce says what it has to say long before this.
TEXT_LIMIT = 64 * 1024
#: What flufl.bounce's detectors get to read of a large message.
FLUFL_LIMIT = 256 * 1024
#: MIME nesting deeper than this is not a bounce, it is an attack on the parser.
MAX_DEPTH = 20

_DSN_TYPES = {"message/delivery-status", "message/global-delivery-status"}
_ARF_TYPE = "message/feedback-report"
_ORIGINAL_TYPES = {"message/rfc822", "message/global", "message/partial"}
_ORIGINAL_HEADER_TYPES = {"text/rfc822-headers", "message/global-headers"}

#: An address; matched only from the start of a run of address characters, so a long run
#: without an "@" costs one attempt, not one per character (hostile input stays linear).
ADDRESS = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


class BounceTooLarge(ValueError):
    """The input is over ``settings.bounce_max_bytes``: refused before it is parsed."""


@dataclass(frozen=True)
class FailedRecipient:
    recipient: str  # Final-Recipient address (lowercased domain), '' if unknown
    original_recipient: str  # Original-Recipient or ''
    action: str  # failed, delayed, delivered, relayed, expanded; '' when not from a DSN
    status: str  # enhanced status "5.1.1" or ''
    diagnostic: str  # Diagnostic-Code text, or the line the heuristic matched
    remote_mta: str
    bounce_class: BounceClass


@dataclass(frozen=True)
class BounceReport:
    kind: str  # "dsn", "arf", "autoreply", "heuristic", "not-a-bounce", "unparsed"
    recipients: list[FailedRecipient]
    addressed_to: list[str]  # where the report was sent: where a VERP token is looked for
    original_message_id: str  # Message-ID of the quoted original message ('' if none)
    original_return_path: str
    subject: str
    message_id: str  # the report's own Message-ID
    feedback_type: str  # ARF Feedback-Type (abuse, fraud, …) or ''
    error: str  # why it is unparsed, else ''
    excerpt: str  # bounded excerpt of the raw message (≤ 8 KB) as evidence


# --- entry points ---------------------------------------------------------------------------


def parse_bounce(
    raw: bytes, *, envelope_to: Sequence[str] = (), max_bytes: int | None = None
) -> BounceReport:
    """Understand one bounce mail. Never raises, except :class:`BounceTooLarge`."""
    cap = get_settings().bounce_max_bytes if max_bytes is None else max_bytes
    if len(raw) > cap:
        raise BounceTooLarge(
            f"refused: the message is {len(raw):,} bytes, over the cap of {cap:,} bytes "
            "(MAILER_BOUNCE_MAX_BYTES)"
        )
    excerpt = raw[:EXCERPT_BYTES].decode("utf-8", "replace")
    try:
        return _Reader(raw, list(envelope_to), excerpt).report()
    except Exception as exc:  # a parser bug must neither lose the bounce nor stop the worker
        log.exception("bounce parser failed")
        return BounceReport(
            kind="unparsed", recipients=[_unparsed_recipient("")],
            addressed_to=[a for a in envelope_to if a], original_message_id="",
            original_return_path="", subject="", message_id="", feedback_type="",
            error=f"parser error: {type(exc).__name__}: {exc}"[:500], excerpt=excerpt,
        )


def iter_messages(path: Path, *, limit: int | None = None) -> Iterator[tuple[str, bytes]]:
    """The messages in an .eml file, an mbox file or a Maildir (or a folder of files).

    Yields (label, raw bytes). A single file is read up to ``limit`` + 1 bytes (default:
    the bounce size cap), enough for :func:`parse_bounce` to refuse it without reading a
    huge file into memory.
    """
    limit = get_settings().bounce_max_bytes if limit is None else limit
    path = Path(path)
    if path.is_dir():
        if all((path / sub).is_dir() for sub in ("cur", "new")):
            maildir = mailbox.Maildir(path, factory=None, create=False)
            for key in sorted(maildir.keys()):
                yield f"{path}/{key}", maildir.get_bytes(key)
            return
        for child in sorted(path.iterdir()):
            if child.is_file() and not child.name.startswith("."):
                yield from iter_messages(child, limit=limit)
        return
    with path.open("rb") as fh:
        head = fh.read(limit + 1)
    if head.startswith(b"From "):
        box = mailbox.mbox(path, factory=None, create=False)
        for number, key in enumerate(box.keys(), start=1):
            yield f"{path}#{number}", box.get_bytes(key)
        return
    yield str(path), head


# --- the reader -----------------------------------------------------------------------------


@dataclass
class _Original:
    """What the quoted original message tells: our Message-ID and our return path."""

    message_id: str = ""
    return_path: str = ""
    recipients: list[str] = field(default_factory=list)  # its To, or the provider's note
    senders: list[str] = field(default_factory=list)  # From, Reply-To, Sender: never a failure


class _Reader:
    def __init__(self, raw: bytes, envelope_to: list[str], excerpt: str) -> None:
        self.raw = raw
        self.excerpt = excerpt
        self.msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        self.envelope_to = envelope_to
        self.dsn_texts: list[str] = []
        self.arf_texts: list[str] = []
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.original = _Original()
        self._collect(self.msg, depth=0)

    # --- walking the MIME tree ---------------------------------------------------------------

    def _collect(self, part: Message, depth: int) -> None:
        """Sort the parts: report fields, the human-readable report, the quoted original.

        Nothing inside the quoted original is read as report: a bounce of a bounce, or a
        newsletter that mentions "undeliverable", must not confuse the reader.
        """
        if depth > MAX_DEPTH:
            return
        ctype = part.get_content_type()
        if ctype in _DSN_TYPES:
            self.dsn_texts.append(_fields_text(part))
        elif ctype == _ARF_TYPE:
            self.arf_texts.append(_fields_text(part))
        elif ctype in _ORIGINAL_TYPES or ctype in _ORIGINAL_HEADER_TYPES:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                self._note_original(payload[0])
            elif ctype in _ORIGINAL_HEADER_TYPES:
                self._note_original(HeaderParser().parsestr(_decoded_text(part)))
        elif part.is_multipart():
            for sub in part.get_payload():
                if isinstance(sub, Message):
                    self._collect(sub, depth + 1)
        elif ctype == "text/plain" or part.get_content_maintype() == "multipart":
            # A multipart whose boundary is missing or wrong arrives as one string: its
            # text is all we have, so it is read as the report.
            self.texts.append(_decoded_text(part))
        elif ctype == "text/html":
            self.htmls.append(_decoded_text(part))

    def _note_original(self, headers: Message) -> None:
        if self.original.message_id or self.original.return_path or self.original.recipients:
            return  # the first original is the one that bounced
        self.original = _original_from_headers(headers)

    # --- the report ----------------------------------------------------------------------------

    def report(self) -> BounceReport:
        msg = self.msg
        subject = _header_text(msg.get("Subject"))
        base: dict[str, Any] = {
            "addressed_to": self.addressed_to,
            "subject": subject[:500],
            "message_id": _header_text(msg.get("Message-ID")).strip()[:255],
            "excerpt": self.excerpt,
        }
        text = self._report_text()
        if not self.original.message_id and not self.original.return_path:
            self.original = _original_from_text(_after_cut(self._full_text()))
        original_message_id = self.original.message_id or _in_reply_to(msg)
        return_path = self.original.return_path
        base["original_message_id"] = original_message_id

        if not msg.keys():
            return self._build(base, "unparsed", [_unparsed_recipient("")], return_path,
                               error="not an email message: it has no header fields")
        if self.arf_texts:
            return self._arf(base, return_path)
        if not self.dsn_texts and _DSN_FIELDS_IN_TEXT.search(text):
            # Delivery-status fields in the body of a broken multipart, or pasted as text.
            self.dsn_texts.append(text)
        if self.dsn_texts:
            built = self._dsn(base, text, return_path)
            if built is not None:
                return built
        return self._non_standard(base, subject, text, return_path)

    def _build(self, base: dict[str, Any], kind: str, recipients: list[FailedRecipient],
               return_path: str, *, feedback_type: str = "", error: str = "") -> BounceReport:
        if not return_path:
            return_path = _verp_in_body(self.raw)
        return BounceReport(kind=kind, recipients=recipients, original_return_path=return_path,
                            feedback_type=feedback_type, error=error, **base)

    @functools.cached_property
    def addressed_to(self) -> list[str]:
        found: list[str] = []
        values = list(self.envelope_to)
        for name in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To",
                     "X-Delivered-To", "X-Rcpt-To", "To", "Cc"):
            values.extend(_header_text(v) for v in self.msg.get_all(name, []))
        for _, address in getaddresses(values):
            address = address.strip().strip("<>")
            if "@" in address and address.lower() not in (a.lower() for a in found):
                found.append(address)
        return found

    def _report_text(self) -> str:
        """The human-readable part of the report, without the quoted original."""
        return _before_cut(self._full_text())[:TEXT_LIMIT]

    def _full_text(self) -> str:
        text = "\n".join(self.texts) or "\n".join(_html_to_text(h) for h in self.htmls)
        return text[: 4 * TEXT_LIMIT]

    # --- ARF complaints ------------------------------------------------------------------------

    def _arf(self, base: dict[str, Any], return_path: str) -> BounceReport:
        fields = _merge_blocks(_field_blocks("\n\n".join(self.arf_texts)))
        feedback_type = (fields.get("feedback-type", [""])[0].split() or [""])[0].lower()
        rcpts = [a for v in fields.get("original-rcpt-to", []) for _, a in getaddresses([v])]
        rcpts = [a for a in rcpts if "@" in a] or self.original.recipients
        return_path = return_path or _address(fields.get("original-mail-from", [""])[0])
        if feedback_type == "not-spam":
            return self._build(base, "arf", [], return_path, feedback_type=feedback_type)
        klass = BounceClass.policy if feedback_type == "auth-failure" else BounceClass.complaint
        diagnostic = f"complaint ({feedback_type or 'no feedback type'})"
        agent = fields.get("user-agent", [""])[0]
        if agent:
            diagnostic += f" reported by {agent}"
        recipients = [
            FailedRecipient(_address(r), "", "", "", diagnostic[:500], "", klass)
            for r in dict.fromkeys(rcpts or [""])
        ]
        return self._build(base, "arf", recipients, return_path, feedback_type=feedback_type)

    # --- RFC 3464 delivery status notifications -----------------------------------------------

    def _dsn(self, base: dict[str, Any], text: str, return_path: str) -> BounceReport | None:
        blocks = _field_blocks("\n\n".join(self.dsn_texts))
        per_message = _merge_blocks([b for b in blocks if not _is_recipient_block(b)])
        senders = per_message.get("x-postfix-sender") or per_message.get("original-mail-from")
        return_path = return_path or _address((senders or [""])[0])
        recipients = [self._dsn_recipient(b, text) for b in blocks if _is_recipient_block(b)]
        if not recipients:
            return None  # cut before the first recipient: the text may still say who
        return self._build(base, "dsn", recipients, return_path)

    def _dsn_recipient(self, block: dict[str, list[str]], text: str) -> FailedRecipient:
        def first(name: str) -> str:
            return block.get(name, [""])[0].strip()

        recipient = _address(first("final-recipient") or first("x-actual-recipient")
                             or first("original-recipient"))
        original = _address(first("original-recipient"))
        action = _action(first("action"))
        status_match = ENHANCED.search(first("status"))
        status_field = status_match.group(0) if status_match else ""
        diagnostic = _unfold_reply(_strip_type(first("diagnostic-code")))
        remote = (_strip_type(first("remote-mta")).split() or [""])[0].rstrip(".")
        if action == "delayed":
            verdict = explain(None, status_field, diagnostic)
            klass = BounceClass.delayed
        elif action in ("delivered", "relayed", "expanded"):
            verdict = explain(None, status_field, diagnostic)
            klass = BounceClass.delayed  # nothing failed: kept as evidence, acted on by nobody
        else:
            verdict = explain(None, status_field, diagnostic)
            if not verdict.explained and recipient:
                # The fields say too little ("Status: 5.0.0", no diagnostic): the
                # human-readable part often says more next to the address.
                near = _diagnostic_near(text, recipient)
                better = explain(None, status_field, f"{diagnostic}\n{near}")
                if better.explained:
                    verdict, diagnostic = better, diagnostic or _best_line(near)
            klass = verdict.bounce_class
        if not diagnostic and recipient:
            diagnostic = _best_line(_diagnostic_near(text, recipient))
        return FailedRecipient(
            recipient=recipient, original_recipient=original, action=action,
            status=verdict.status, diagnostic=diagnostic[:2000], remote_mta=remote[:255],
            bounce_class=klass,
        )

    # --- everything else ---------------------------------------------------------------------

    def _non_standard(self, base: dict[str, Any], subject: str, text: str,
                      return_path: str) -> BounceReport:
        msg = self.msg
        sender = _header_text(msg.get("From"))
        sender_name, sender_address = parseaddr(sender)
        looks_like_bounce = bool(
            _DAEMON.search(sender_address.split("@")[0]) or _DAEMON_NAME.search(sender_name)
            or _BOUNCE_SUBJECT.search(subject)
        )
        autoreply = _autoreply_signal(msg, subject, text)
        if not looks_like_bounce and autoreply:
            return self._autoreply(base, sender_address, autoreply, return_path)
        if looks_like_bounce or _BOUNCE_BODY.search(text):
            recipients = self._heuristic(subject, text, sender_address)
            if recipients:
                return self._build(base, "heuristic", recipients, return_path)
            # Bounces carry "Auto-Submitted: auto-replied" too: only a person's address
            # with a stronger sign makes an auto-reply of a bounce-looking message.
            daemon = _DAEMON.search(sender_address.split("@")[0])
            if autoreply and not daemon and "Auto-Submitted" not in autoreply:
                return self._autoreply(base, sender_address, autoreply, return_path)
            guess = self.original.recipients[0] if len(self.original.recipients) == 1 else ""
            return self._build(
                base, "unparsed", [_unparsed_recipient(guess)], return_path,
                error="looks like a bounce, but neither a failed recipient nor a reason "
                      "could be found",
            )
        return self._build(base, "not-a-bounce", [], return_path)

    def _autoreply(self, base: dict[str, Any], sender_address: str, why: str,
                   return_path: str) -> BounceReport:
        address = sender_address
        if why == CHALLENGE:
            # The challenge comes from the filter's own address; the reader is the one
            # it protects, named in the subject or the text.
            ours = {a.lower() for a in self.addressed_to} | {sender_address.lower()}
            ours |= {a.lower() for _, a in getaddresses([_header_text(self.msg.get("Reply-To"))])}
            named = ADDRESS.findall(f"{base['subject']}\n{self._report_text()}")
            address = next((a for a in named if a.lower() not in ours), sender_address)
        recipient = FailedRecipient(_address(address), "", "", "", why[:500], "",
                                    BounceClass.autoreply)
        return self._build(base, "autoreply", [recipient], return_path)

    def _heuristic(self, subject: str, text: str, sender_address: str) -> list[FailedRecipient]:
        excluded = self._not_recipients(text, sender_address)
        # Exim and Gmail name the failed addresses in a header: better than any guess.
        addresses = [a for _, a in getaddresses(
            [_header_text(v) for v in self.msg.get_all("X-Failed-Recipients", [])]) if "@" in a]
        if not addresses:
            addresses = [a for a in _candidate_addresses(text) if a.lower() not in excluded]
        if not addresses:
            addresses = [a for a in self._flufl_addresses() if a.lower() not in excluded]
        warning = bool(_WARNING.search(subject) or _WARNING.search(text[:4000]))
        whole = _strip_boilerplate(text)
        found: list[tuple[bool, FailedRecipient]] = []
        for address in dict.fromkeys(_address(a) for a in addresses):
            near = _strip_boilerplate(_diagnostic_near(text, address, others=addresses))
            verdict = explain(None, "", near)
            own_reason = verdict.explained
            diagnostic = _best_line(near)
            if not own_reason:
                overall = explain(None, "", whole)
                if overall.explained or not diagnostic:
                    verdict, diagnostic = overall, _best_line(whole) or diagnostic
            found.append((own_reason, self._heuristic_recipient(address, verdict, diagnostic,
                                                                near, warning)))
        # An address with no reason next to it, among others that have one, is a mention
        # (a helpdesk, a colleague), not a failure.
        if any(own for own, _ in found):
            found = [(own, r) for own, r in found if own]
        results = [r for _, r in found]
        if results:
            return results
        # A reason without an address ("550 5.1.1 User unknown" and nothing else): still a
        # bounce worth keeping, attributed by the VERP token or the quoted original.
        verdict = explain(None, "", whole)
        if not verdict.explained:
            return []
        guess = self.original.recipients[0] if len(self.original.recipients) == 1 else ""
        return [self._heuristic_recipient(_address(guess), verdict, _best_line(whole), whole,
                                          warning)]

    def _heuristic_recipient(self, address: str, verdict: Verdict, diagnostic: str, near: str,
                             warning: bool) -> FailedRecipient:
        klass = BounceClass.delayed if warning else verdict.bounce_class
        remote = _REMOTE_HOST.search(near)
        return FailedRecipient(
            recipient=address, original_recipient="", action="", status=verdict.status,
            diagnostic=diagnostic[:2000], remote_mta=remote.group(1) if remote else "",
            bounce_class=klass,
        )

    def _not_recipients(self, text: str, sender_address: str) -> set[str]:
        """Addresses a bounce mentions that are surely not the failed recipient."""
        settings = get_settings()
        excluded = {a.lower() for a in self.addressed_to}
        excluded |= {a.lower() for a in self.original.senders}
        excluded |= {sender_address.lower(), settings.from_email.lower()}
        if self.original.return_path:
            excluded.add(self.original.return_path.lower())
        for match in _SENDER_LINE.finditer(text):
            excluded.update(a.lower() for a in ADDRESS.findall(match.group(0)))
        bounce_domain = "@" + settings.bounce_domain.lower()
        return {a for a in excluded if a} | {
            a.lower() for a in ADDRESS.findall(text)
            if a.lower().endswith(bounce_domain) or _DAEMON.fullmatch(a.split("@")[0])
        }

    def _flufl_addresses(self) -> list[str]:
        try:
            from flufl.bounce import all_failures

            # Its detectors read every line: a huge returned attachment would cost seconds.
            msg = self.msg if len(self.raw) <= FLUFL_LIMIT else email.message_from_bytes(
                self.raw[:FLUFL_LIMIT], policy=email.policy.compat32)
            temporary, permanent = all_failures(msg)
        except Exception:  # a detector choking on odd MIME is no reason to give up
            return []
        found = [a.decode("ascii", "replace") for a in sorted(permanent | temporary)]
        return [a for a in found if ADDRESS.fullmatch(a)]


# --- fields: DSN and ARF ---------------------------------------------------------------------

_DSN_FIELDS_IN_TEXT = re.compile(
    r"^(final-recipient|original-recipient)[ \t]*:[ \t]*\S+;", re.IGNORECASE | re.MULTILINE
)
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]?(.*)$")


def _fields_text(part: Message) -> str:
    """The field blocks of a delivery-status or feedback-report part, as text.

    The email package splits ``message/delivery-status`` into one Message per block, parses
    other ``message/*`` types (global-delivery-status, feedback-report) as one embedded
    message whose headers are the first block, and leaves encoded ones as a string.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _decoded_text(part)
    blocks = []
    for sub in payload:
        if not isinstance(sub, Message):
            continue
        lines = [f"{name}: {_header_text(value)}" for name, value in sub.items()]
        body = "" if sub.is_multipart() else _decoded_text(sub)
        if body.strip():
            lines.append("")
            lines.append(body)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _field_blocks(text: str) -> list[dict[str, list[str]]]:
    """``Name: value`` blocks separated by blank lines; continuation lines unfolded."""
    blocks: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        match = _FIELD.match(line)
        if match and not line[0].isspace():
            last = match.group(1).lower()
            current.setdefault(last, []).append(match.group(2).strip())
        elif last is not None:
            current[last][-1] = f"{current[last][-1]} {line.strip()}".strip()
    if current:
        blocks.append(current)
    return blocks


def _merge_blocks(blocks: list[dict[str, list[str]]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for block in blocks:
        for name, values in block.items():
            merged.setdefault(name, []).extend(values)
    return merged


def _is_recipient_block(block: dict[str, list[str]]) -> bool:
    return any(k in block for k in ("final-recipient", "original-recipient", "x-actual-recipient"))


def _action(value: str) -> str:
    word = (value.split() or [""])[0].lower().rstrip(";,.")
    if word.startswith(("fail", "error", "permanent", "bounce")):
        return "failed"
    if word.startswith(("delay", "defer", "transient")):
        return "delayed"
    return word


def _strip_type(value: str) -> str:
    """``smtp; 550 5.1.1 …`` → ``550 5.1.1 …``; ``dns; mx.example.net`` → ``mx.example.net``."""
    value = " ".join(value.split())
    match = re.match(r"^[A-Za-z][\w.-]*\s*;\s*", value)
    return value[match.end():] if match else value


_REPLY_START = re.compile(r"^(\d{3})[ -](\d\.\d{1,3}\.\d{1,3}\b)?")


def _unfold_reply(text: str) -> str:
    """``550-5.1.1 The email account … 550-5.1.1 double-checking … 550 5.1.1 …`` → one
    sentence: a multi-line SMTP reply repeats its code on every line."""
    match = _REPLY_START.match(text)
    if not match:
        return text
    code, status = match.group(1), match.group(2)
    repeated = rf"\s{code}[ -]" + (rf"(?:{re.escape(status)}\s+)?" if status else "")
    rest = re.sub(repeated, " ", text[match.end():])
    return " ".join(f"{code} {status or ''} {rest}".split())


_XTEXT_UNICODE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def _address(value: str) -> str:
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


# --- the quoted original ----------------------------------------------------------------------

_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")


def _original_from_headers(headers: Message) -> _Original:
    def values(name: str) -> list[str]:
        return [_header_text(v) for v in headers.get_all(name, [])]

    ids = _MESSAGE_ID.findall(" ".join(values("Message-ID")))
    return_path = _address(" ".join(values("Return-Path")))
    recipients = [a for _, a in getaddresses(values("X-HmXmrOriginalRecipient"))]
    recipients += [a for _, a in getaddresses(values("To")) if _real_address(a)]
    senders = [a for _, a in getaddresses(values("From") + values("Reply-To") + values("Sender"))]
    return _Original(
        message_id=ids[0] if ids else "", return_path=return_path,
        recipients=[a for a in dict.fromkeys(recipients) if "@" in a],
        senders=[a for a in senders if "@" in a],
    )


_QUOTED_HEADER = re.compile(
    r"^(Message-ID|Return-Path|To|From|Reply-To|Sender|X-HmXmrOriginalRecipient)[ \t]*:[ \t]*(.*)$",
    re.IGNORECASE | re.MULTILINE,
)


def _original_from_text(text: str) -> _Original:
    """The original's headers quoted in the body of a one-part bounce."""
    found: dict[str, list[str]] = {}
    for match in _QUOTED_HEADER.finditer(text[:TEXT_LIMIT]):
        found.setdefault(match.group(1).lower(), []).append(match.group(2))
    ids = _MESSAGE_ID.findall(" ".join(found.get("message-id", [])[:1]))
    recipients = [a for _, a in getaddresses(found.get("x-hmxmroriginalrecipient", []))]
    recipients += [a for _, a in getaddresses(found.get("to", [])[:1]) if _real_address(a)]
    senders = [a for _, a in getaddresses(
        found.get("from", [])[:1] + found.get("reply-to", [])[:1] + found.get("sender", [])[:1])]
    return _Original(
        message_id=ids[0] if ids else "",
        return_path=_address((found.get("return-path") or [""])[0]),
        recipients=[a for a in dict.fromkeys(recipients) if "@" in a],
        senders=[a for a in senders if "@" in a],
    )


def _real_address(address: str) -> bool:
    """Not a provider's placeholder for a redacted recipient (AOL: ``redacted@aol.com``)."""
    return "@" in address and not re.search(r"redacted|x{4,}|\*{3,}", address, re.IGNORECASE)


def _in_reply_to(msg: Message) -> str:
    """Gmail's bounces and every auto-reply name our message in In-Reply-To / References."""
    for name in ("In-Reply-To", "References"):
        ids = _MESSAGE_ID.findall(_header_text(msg.get(name)))
        if ids:
            return ids[0] if name == "In-Reply-To" else ids[-1]
    return ""


_VERP_IN_BODY = re.compile(rb"bounces\+[0-9A-Za-z]+-[0-9A-Za-z]+@[\w.-]+")


def _verp_in_body(raw: bytes) -> str:
    """A VERP return path quoted anywhere in the body (the original's headers inline)."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        head, sep, body = raw.partition(b"\r\n\r\n")
    match = _VERP_IN_BODY.search(body[: 4 * TEXT_LIMIT]) if sep else None
    return match.group(0).decode("ascii", "replace") if match else ""


# --- the text of a non-standard bounce --------------------------------------------------------

#: Where a one-part bounce starts quoting the original message: nothing after it is report.
_CUT = re.compile(
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


def _before_cut(text: str) -> str:
    match = _CUT.search(text)
    return text[: match.start()] if match else text


def _after_cut(text: str) -> str:
    match = _CUT.search(text)
    return text[match.start():] if match else ""


_SENDER_LINE = re.compile(
    r"^.*(?:mail from|sender ok|sender address|envelope-from|\bfrom:|return-path:|reply-to:).*$",
    re.IGNORECASE | re.MULTILINE,
)
_DAEMON = re.compile(
    r"^(mailer[-_]?daemon|mail[-_]?daemon|post[-_]?master|mdaemon|mail[-_]?delivery[-_]?(system|subsystem)?"
    r"|bounces?|nobody|noreply-?dmarc-?support|abuse)$",
    re.IGNORECASE,
)
_DAEMON_NAME = re.compile(
    r"mail delivery (system|subsystem|service)|mailer[- ]daemon|postmaster|mail administrator"
    r"|system administrator|microsoft outlook|mail system|e-?mail delivery"
    r"|delivery (status|report)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|not (be )?delivered|delivery (status notification|failure|failed"
    r"|has failed|problem|report|notification|incomplete)|returned mail|returned to sender"
    r"|mail delivery failed|failure notice|non[- ]?delivery|nondeliverable|delivery delayed"
    r"|delayed mail|warning: (message|could not)|mail system error|message not delivered"
    r"|delivery error|could not send|unable to deliver|rejected|bounce"
    r"|unzustellbar|nicht zustellbar|unzustellbare|zustellung|non remis|non distribu"
    r"|no se puede entregar|no entregado|non recapitat|onbestelbaar|niet afgeleverd",
    re.IGNORECASE,
)
_BOUNCE_BODY = re.compile(
    r"mail delivery software|qmail-send program|permanent fatal errors|could not be delivered"
    r"|couldn't be delivered|delivery has failed|wasn't delivered|was not delivered"
    r"|did not reach the following|delivery to the following recipient|unable to deliver"
    r"|i'm afraid i wasn't able to deliver|failed permanently|cannot be delivered"
    r"|undeliverable|non-delivery|delivery failure|not yet been delivered|mail delivery failed"
    r"|konnte nicht zugestellt werden|n'a pas pu être (remis|distribué)|no se ha podido entregar"
    r"|non è stato possibile recapitare|kon niet worden afgeleverd"
    # an SMTP transcript or a relayed reply: only a delivery report quotes those
    r"|\brcpt to:|remote (host|server) (said|returned)|smtp error from remote"
    r"|requested action not taken|invalid (user|recipient) address",
    re.IGNORECASE,
)
#: A warning: delivery is still being tried. These win over words like "give up" that a
#: warning uses to say what will happen later.
_WARNING = re.compile(
    r"warning message only|you do not need to resend|has not yet been delivered"
    r"|not been delivered yet|delivery attempts will continue|will (continue to )?(re)?try"
    r"|still (being )?(re)?tr(y|ied)|will keep trying|delivery (has been )?delayed"
    r"|\(delay\)|delayed mail|message delayed|\bdelayed \d+ (hours?|minutes?|days?)"
    r"|warning: (message|could not send message)|zustellung verzögert|noch nicht zugestellt"
    r"|distribution retardée|entrega retrasada",
    re.IGNORECASE,
)
_REMOTE_HOST = re.compile(
    r"\b(?:host|server|mta)[: ]+\[?([a-z0-9][\w-]*(?:\.[\w-]+)+)\]?\s*(?:\[|\(|said|:)",
    re.IGNORECASE,
)

#: An address the bounce points at as the failed one (group 1).
_CANDIDATES = [
    # on a line of its own: Exim, qmail, Sendmail, Exchange, Domino, Yahoo, O365
    re.compile(
        r"^[ \t]*[<\"']?(" + ADDRESS.pattern + r")[>\"']?:?[ \t]*"
        r"(?:\(.*\)|on .*|<mailto:[^>]*>|\[.*\]|\.)?[ \t]*$",
        re.MULTILINE,
    ),
    # "<addr>... User unknown", "<addr>: host mx said: 550 …", "addr: 550 …"
    re.compile(r"^[ \t]*<?(" + ADDRESS.pattern + r")>?(?:\.\.\.|:)[ \t]+\S", re.MULTILINE),
    re.compile(r"<(" + ADDRESS.pattern + r")>(?:\.\.\.|:)[ \t]", re.MULTILINE),
    re.compile(r"RCPT TO:?[ \t]*<?(" + ADDRESS.pattern + r")", re.IGNORECASE),
    # "Your message to addr couldn't be delivered", "wasn't delivered to addr"
    re.compile(
        r"(?:message|mail|e-?mail) (?:to|for) <?(" + ADDRESS.pattern + r")>?,? "
        r"(?:couldn't|could not|can't|cannot|was not|wasn't|has not|hasn't|did not|didn't|failed)",
        re.IGNORECASE,
    ),
    re.compile(
        r"(?:not|n't) (?:be )?(?:delivered|reach(?:ed)?) (?:to)?:?\s*<?(" + ADDRESS.pattern + r")",
        re.IGNORECASE,
    ),
    re.compile(
        r"(?:^|\s)(?:failed |final |original )?(?:recipient|recipient address|destinataire"
        r"|empfänger|destinatario)(?:\(s\))?[ \t]*:[ \t]*<?(" + ADDRESS.pattern + r")",
        re.IGNORECASE | re.MULTILINE,
    ),
]


def _candidate_addresses(text: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for pattern in _CANDIDATES:
        found.extend((m.start(1), m.group(1)) for m in pattern.finditer(text))
    ordered = [address for _, address in sorted(found)]
    return list(dict.fromkeys(ordered))


_LINE_OF_ADDRESS = re.compile(
    r"^[ \t]*[<\"']?" + ADDRESS.pattern
    + r"[>\"']?:?[ \t]*(?:on .*|<mailto:[^>]*>|\(.*@.*\))?[ \t]*$"
)


def _diagnostic_near(text: str, address: str, *, others: Sequence[str] = ()) -> str:
    """The lines next to each mention of ``address``, up to the next failed address."""
    lines = text.splitlines()
    lowered = address.lower()
    stops = {o.lower() for o in others} - {lowered}
    windows: list[str] = []
    for index, line in enumerate(lines):
        if lowered not in line.lower():
            continue
        window = [line]
        blank = 0
        for following in lines[index + 1 : index + 14]:
            low = following.lower()
            if any(s in low for s in stops) and _LINE_OF_ADDRESS.match(following):
                break
            if _CUT.match(following):
                break
            blank = blank + 1 if not following.strip() else 0
            if blank >= 3:
                break
            window.append(following)
        windows.append("\n".join(window).strip())
        if len(windows) >= 6:
            break
    return "\n".join(dict.fromkeys(windows))


def _best_line(text: str) -> str:
    """The line that says why: one with an SMTP code, else one with a known wording.

    A reply folded over several lines (Postfix indents the rest, multi-line SMTP replies
    repeat the code with a dash: "550-5.1.1 … / 550 5.1.1 …") is joined into one.
    """
    lines = text.splitlines()
    candidates = [i for i, ln in enumerate(lines) if ln.strip() and not _LINE_OF_ADDRESS.match(ln)]
    for index in candidates:
        line = lines[index]
        code = BASIC.search(line)
        if not (ENHANCED.search(line) or code):
            continue
        indent = len(line) - len(line.lstrip())
        parts = [line.strip()]
        for following in lines[index + 1 : index + 8]:
            stripped = following.strip()
            if code and stripped.startswith((f"{code.group(1)}-", f"{code.group(1)} ")):
                parts.append(_REPLY_PREFIX.sub("", stripped))
                continue
            following_indent = len(following) - len(following.lstrip())
            # Postfix indents the rest of a reply; Exim wraps it at the same indent.
            if not stripped or following_indent < indent or following_indent == indent == 0:
                break
            if BASIC.match(stripped) or stripped.startswith(("---", "***", "===")):
                break
            parts.append(stripped)
        return _from_the_code(" ".join(parts))[:1000]
    for index in candidates:
        if explain(None, "", lines[index]).explained:
            return lines[index].strip()[:1000]
    return lines[candidates[0]].strip()[:1000] if candidates else ""


def _from_the_code(line: str) -> str:
    """A long sentence that ends in the reply ("… the error that the other server returned
    was: 550 5.1.1 user unknown") is shown from the sentence that holds the code."""
    if len(line) <= 160:
        return line
    code = ENHANCED.search(line) or BASIC.search(line)
    if code is None:
        return line
    starts = [m.end() for m in _CLAUSE_END.finditer(line, 0, code.start())]
    return line[starts[-1]:] if starts else line


_CLAUSE_END = re.compile(r"[.!?:]\s+")
_REPLY_PREFIX = re.compile(r"^\d{3}[ -](\d\.\d{1,3}\.\d{1,3} )?")

#: Sentences that advise or hedge ("the account may not exist, they may be blacklisted")
#: say what could be wrong in general, not what went wrong here.
_HEDGE = re.compile(
    r"\bmay\b|\bmight\b|\bpossibl[ey]\b|possible (causes?|reasons?)|if the problem"
    r"|for (further|more) (assistance|information|details)|include this problem report"
    r"|learn more|postmaster|help ?desk|your (e-?mail )?admin|contact the recipient"
    r"|by (some )?other means|automatically generated|do not reply|ne pas r[ée]pondre",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def _strip_boilerplate(text: str) -> str:
    """The report without its advice: lines with an SMTP code always stay."""
    out = []
    for line in text.splitlines():
        if ENHANCED.search(line) or BASIC.search(line) or not _HEDGE.search(line):
            out.append(line)
            continue
        out.append(" ".join(s for s in _SENTENCE_END.split(line) if not _HEDGE.search(s)))
    return "\n".join(out)


# --- auto-replies ------------------------------------------------------------------------------

_AUTO_SUBJECT = re.compile(
    r"^\W*(auto(matic|matische|matisch)?[ -]?(reply|response|antwort|answer|antwoord|svar)"
    r"|auto:|out of (the )?office|\booo\b|abwesen|automatische antwort|r[ée]ponse automatique"
    r"|risposta automatica|respuesta autom[aá]tica|afwezig|absence|absent|away from|vacation"
    r"|on vacation|on leave|urlaub|cong[ée]s?\b|fuori ufficio)",
    re.IGNORECASE,
)
_AUTO_BODY = re.compile(
    r"out of (the )?office|on (annual |parental |sick )?(leave|vacation|holiday)"
    r"|away from (the|my) (office|desk)|i am (currently )?(out|away|absent|travel+ing|on leave)"
    r"|i'm (currently )?(out|away|on leave)|limited access to (my )?e-?mail|will (be )?back on"
    r"|return(ing)? (to the office )?on|abwesend|nicht im büro|im urlaub|keinen zugriff"
    r"|absente?s? du bureau|en cong[ée]s?|de vacaciones|fuera de la oficina|fuori ufficio"
    r"|in ferie|niet aanwezig|afwezig",
    re.IGNORECASE,
)
_CHALLENGE = re.compile(
    r"(confirm|verify) (that )?(you are|you're) (a )?(human|real person|not a (robot|spammer))"
    r"|please (confirm|verify) (your )?(message|e-?mail|identity|address)"
    r"|awaiting (your )?(verification|confirmation)|approved senders|sender verification"
    r"|spam ?arrest|boxbe|choicemail|mailchannels? sender|challenge[- ]response"
    r"|held (in|for) (a )?(quarantine|approval|review) until you",
    re.IGNORECASE,
)


CHALLENGE = "challenge-response: the reader's spam filter asks the sender to prove itself"


def _autoreply_signal(msg: Message, subject: str, text: str) -> str:
    """Why this message is an auto-reply, in words ('' when it is not one)."""
    if _CHALLENGE.search(subject) or _CHALLENGE.search(text[:3000]) or any(
            name.lower().startswith(("x-boxbe", "x-spamarrest")) for name in msg):
        return CHALLENGE
    auto_submitted = _header_text(msg.get("Auto-Submitted")).strip().lower()
    for name in ("X-Autoreply", "X-Autorespond", "X-AutoReply-From", "X-Mail-Autoreply",
                 "X-Vacation", "X-Autoresponder"):
        if msg.get(name) is not None:
            return f"auto-reply ({name} header)"
    if auto_submitted.startswith("auto-replied"):
        return "auto-reply (Auto-Submitted: auto-replied)"
    precedence = " ".join(_header_text(msg.get(n)) for n in ("Precedence", "X-Precedence"))
    if "auto_reply" in precedence.lower() or "auto-reply" in precedence.lower():
        return "auto-reply (Precedence: auto_reply)"
    if _header_text(msg.get("X-Autogenerated")).lower().startswith("reply"):
        return "auto-reply (X-Autogenerated: Reply)"
    if _AUTO_SUBJECT.search(subject):
        return f"auto-reply (subject: {subject[:80]})"
    body = text.strip()
    if auto_submitted.startswith("auto-") and _AUTO_BODY.search(body[:1500]):
        return f"auto-reply (Auto-Submitted: {auto_submitted})"
    if len(body) < 3000 and _AUTO_BODY.search(body[:800]):
        return "auto-reply (worded as out of office)"
    return ""


# --- decoding helpers --------------------------------------------------------------------------


def _unescape_8bit(value: str) -> str:
    """compat32 keeps raw 8-bit bytes as surrogates: give them back as UTF-8 (or Latin-1)."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    data = value.encode("ascii", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _header_text(value: object) -> str:
    """A header value as readable text: RFC 2047 words decoded, raw UTF-8 accepted."""
    if value is None:
        return ""
    if isinstance(value, Header):  # compat32 wraps raw 8-bit header values in a Header
        chunks = []
        for data, charset in decode_header(value):
            if isinstance(data, str):
                chunks.append(data)
            else:
                chunks.append(_bytes_text(data, None if charset == "unknown-8bit" else charset))
        return " ".join("".join(chunks).split())
    text = _unescape_8bit(str(value))
    if "=?" in text:
        with contextlib.suppress(Exception):  # a broken encoded word: keep it as it came
            text = str(make_header(decode_header(text)))
    return " ".join(text.split())


def _bytes_text(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")


def _decoded_text(part: Message) -> str:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        return ""
    # Bodies keep the CRLF they came with; every pattern here reads lines ending in LF.
    return _bytes_text(data, part.get_content_charset()).replace("\r\n", "\n").replace("\r", "\n")


_TAG_BREAK = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h\d|/table)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def _html_to_text(value: str) -> str:
    value = _SCRIPT.sub(" ", value[: 4 * TEXT_LIMIT])
    value = _TAG_BREAK.sub("\n", value)
    value = html.unescape(_TAG.sub(" ", value))
    return "\n".join(" ".join(line.split()) for line in value.splitlines())


def _unparsed_recipient(guess: str) -> FailedRecipient:
    return FailedRecipient(_address(guess), "", "", "", "", "", BounceClass.unparsed)
