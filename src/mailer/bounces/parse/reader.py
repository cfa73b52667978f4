"""One bounce mail read from top to bottom: which kind of report it is, and what it says.

The order is the order of trust: an ARF complaint, then RFC 3464 delivery-status fields,
then an Amazon SES notification in JSON, then the wording of a non-standard bounce, then
an auto-reply, else not a bounce at all. A report that arrives wrapped — forwarded as a
``message/rfc822`` attachment, or pasted into a mail after its mbox ``From `` line — is
read as the report it wraps.
"""

from __future__ import annotations

import email
import email.policy
import functools
import re
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any

from mailer.bounces import patterns
from mailer.bounces.classes import BounceClass
from mailer.bounces.parse.arf import JMRP_SUBJECT, read_arf
from mailer.bounces.parse.autoreply import CHALLENGE, autoreply_signal, unsubscribe_request
from mailer.bounces.parse.decoding import ADDRESS, address, header_text
from mailer.bounces.parse.dsn import DSN_FIELDS_IN_TEXT, read_dsn
from mailer.bounces.parse.heuristics import (
    BOUNCE_BODY,
    BOUNCE_SUBJECT,
    DAEMON,
    DAEMON_NAME,
    read_heuristic,
)
from mailer.bounces.parse.mime import addressed_to, sort_parts
from mailer.bounces.parse.original import after_cut, from_text, in_reply_to, verp_in_body
from mailer.bounces.parse.report import (
    BounceReport,
    FailedRecipient,
    OurAddresses,
    unparsed_recipient,
)
from mailer.bounces.parse.ses import looks_like_ses, read_ses

#: How many wrappings (forwarded, pasted) deep a report is looked for.
MAX_WRAPPING = 3

#: An mbox separator line, "From MAILER-DAEMON Tue Mar  3 09:05:07 2026", followed by the
#: header fields of the message it starts.
_MBOX_FROM = patterns.compile(r"^From \S+ +\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
                        r"(?=(?:[A-Za-z][\w-]*:.*\n)+)", re.MULTILINE)


class Reader:
    def __init__(self, raw: bytes, envelope_to: list[str], excerpt: str, *,
                 ours: OurAddresses, depth: int = 0) -> None:
        self.raw = raw
        self.ours = ours
        self.excerpt = excerpt
        self.msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        self.envelope_to = envelope_to
        self.parts = sort_parts(self.msg)
        self.depth = depth

    @functools.cached_property
    def addressed_to(self) -> list[str]:
        return addressed_to(self.msg, self.envelope_to)

    def report(self) -> BounceReport:
        msg, parts = self.msg, self.parts
        subject = header_text(msg.get("Subject"))
        base: dict[str, Any] = {
            "addressed_to": self.addressed_to,
            "subject": subject[:500],
            "message_id": header_text(msg.get("Message-ID")).strip()[:255],
            "excerpt": self.excerpt,
        }
        text = parts.report_text()
        if not parts.original.message_id and not parts.original.return_path:
            parts.original = from_text(after_cut(parts.full_text()))
        base["original_message_id"] = parts.original.message_id or in_reply_to(msg)
        return_path = parts.original.return_path

        if not msg.keys():
            return self._build(base, "unparsed", [unparsed_recipient("")], return_path,
                               error="not an email message: it has no header fields")
        if parts.arf_texts:
            recipients, feedback_type, named = read_arf(parts.arf_texts, parts.original)
            return self._build(base, "arf", recipients, return_path or named,
                               feedback_type=feedback_type)
        if not parts.dsn_texts:
            wrapped = self._wrapped()
            if wrapped is not None:
                return wrapped
        if not parts.dsn_texts and DSN_FIELDS_IN_TEXT.search(text):
            # Delivery-status fields in the body of a broken multipart, or pasted as text.
            parts.dsn_texts.append(text)
        if parts.dsn_texts:
            recipients, named = read_dsn(parts.dsn_texts, text)
            if recipients:  # else cut before the first recipient: the text may still say who
                return self._build(base, "dsn", recipients, return_path or named)
        sender = parseaddr(header_text(msg.get("From")))[1]
        full = parts.full_text()
        if looks_like_ses(sender, full):
            notification = read_ses(full)
            if notification is not None:
                base["original_message_id"] = (notification.message_id
                                               or base["original_message_id"])
                return self._build(base, notification.kind, notification.recipients,
                                   notification.return_path or return_path,
                                   feedback_type=notification.feedback_type)
        return self._non_standard(base, subject, text, return_path)

    def _wrapped(self) -> BounceReport | None:
        """The report inside a forwarded attachment or pasted after an mbox line, if any."""
        if self.depth >= MAX_WRAPPING:
            return None
        inner = self.parts.attached_report
        raw = _as_bytes(inner) if inner is not None else None
        if raw is None:
            match = _MBOX_FROM.search(self.parts.full_text())
            if match is None:
                return None
            raw = self.parts.full_text()[match.end():].encode("utf-8", "surrogateescape")
        report = Reader(raw, self.envelope_to, self.excerpt, ours=self.ours,
                        depth=self.depth + 1).report()
        if report.kind in ("not-a-bounce", "unparsed"):
            return None
        extra = [a for a in self.addressed_to if a.lower() not in
                 {b.lower() for b in report.addressed_to}]
        return BounceReport(**{**report.__dict__, "addressed_to": [*report.addressed_to, *extra],
                               "excerpt": self.excerpt})

    def _build(self, base: dict[str, Any], kind: str, recipients: list[FailedRecipient],
               return_path: str, *, feedback_type: str = "", error: str = "") -> BounceReport:
        if not return_path:
            return_path = verp_in_body(self.raw)
        return BounceReport(kind=kind, recipients=recipients, original_return_path=return_path,
                            feedback_type=feedback_type, error=error, **base)

    def _non_standard(self, base: dict[str, Any], subject: str, text: str,
                      return_path: str) -> BounceReport:
        msg = self.msg
        sender_name, sender_address = parseaddr(header_text(msg.get("From")))
        daemon = DAEMON.search(sender_address.split("@")[0])
        looks_like_bounce = bool(daemon or DAEMON_NAME.search(sender_name)
                                 or BOUNCE_SUBJECT.search(subject))
        if not looks_like_bounce and JMRP_SUBJECT.search(subject) \
                and self.parts.original.recipients:
            # Outlook.com's JMRP in its original form: no feedback-report part, only the
            # complained-about message, its reader in X-HmXmrOriginalRecipient.
            reader = self.parts.original.recipients[0]
            complaint = FailedRecipient(address(reader), "", "", "",
                                        f"complaint ({subject[:200]})", "",
                                        BounceClass.complaint)
            return self._build(base, "arf", [complaint], return_path, feedback_type="abuse")
        if not looks_like_bounce and unsubscribe_request(subject, text):
            return self._build(base, "not-a-bounce", [], return_path)
        autoreply = autoreply_signal(msg, subject, text)
        if not looks_like_bounce and autoreply:
            return self._autoreply(base, sender_address, autoreply, return_path)
        if looks_like_bounce or BOUNCE_BODY.search(text):
            recipients = read_heuristic(
                msg, self.raw, subject=subject, text=text, sender_address=sender_address,
                addressed_to=self.addressed_to, original=self.parts.original, ours=self.ours)
            if recipients:
                return self._build(base, "heuristic", recipients, return_path)
            # Bounces carry "Auto-Submitted: auto-replied" too: only a person's address
            # with a stronger sign makes an auto-reply of a bounce-looking message.
            if autoreply and not daemon and "Auto-Submitted" not in autoreply:
                return self._autoreply(base, sender_address, autoreply, return_path)
            known = self.parts.original.recipients
            return self._build(
                base, "unparsed", [unparsed_recipient(known[0] if len(known) == 1 else "")],
                return_path,
                error="looks like a bounce, but neither a failed recipient nor a reason "
                      "could be found",
            )
        return self._build(base, "not-a-bounce", [], return_path)

    def _autoreply(self, base: dict[str, Any], sender_address: str, why: str,
                   return_path: str) -> BounceReport:
        named = sender_address
        if why == CHALLENGE:
            # The challenge comes from the filter's own address; the reader is the one
            # it protects, named in the subject or the text.
            ours = {a.lower() for a in self.addressed_to} | {sender_address.lower()}
            ours |= {a.lower() for _, a in getaddresses([header_text(self.msg.get("Reply-To"))])}
            found = ADDRESS.findall(f"{base['subject']}\n{self.parts.report_text()}")
            named = next((a for a in found if a.lower() not in ours), sender_address)
        recipient = FailedRecipient(address(named), "", "", "", why[:500], "",
                                    BounceClass.autoreply)
        return self._build(base, "autoreply", [recipient], return_path)


def _as_bytes(message: Message) -> bytes | None:
    try:
        return message.as_bytes(policy=email.policy.compat32)
    except Exception:  # a message the email package cannot serialise is not read twice
        return None
