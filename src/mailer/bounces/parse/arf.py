"""RFC 5965 ARF reports: a reader pressed "spam" (or a provider reports an auth failure)."""

from __future__ import annotations

import re
from email.utils import getaddresses

from mailer.bounces import patterns
from mailer.bounces.classes import BounceClass
from mailer.bounces.parse.decoding import address
from mailer.bounces.parse.dsn import field_blocks, merge_blocks
from mailer.bounces.parse.original import Original
from mailer.bounces.parse.report import FailedRecipient

#: Outlook.com's complaints in their original JMRP form, without a feedback-report part.
JMRP_SUBJECT = patterns.compile(r"^\W*complaint about message from\b", re.IGNORECASE)

#: Feedback types that are no complaint about a reader: "not-spam" takes one back,
#: "auth-failure" (RFC 6591, DMARC forensic reports) says a message claiming our domain
#: failed authentication somewhere — nothing about a reader at all.
NOT_COMPLAINTS = ("not-spam", "auth-failure")


def read_arf(arf_texts: list[str], original: Original) -> tuple[list[FailedRecipient], str, str]:
    """(the complained-about recipients, the feedback type, the return path it names)."""
    fields = merge_blocks(field_blocks("\n\n".join(arf_texts)))
    feedback_type = (fields.get("feedback-type", [""])[0].split() or [""])[0].lower()
    rcpts = [a for v in fields.get("original-rcpt-to", []) for _, a in getaddresses([v])]
    rcpts = [a for a in rcpts if "@" in a] or original.recipients
    return_path = address(fields.get("original-mail-from", [""])[0])
    if feedback_type in NOT_COMPLAINTS:
        return [], feedback_type, return_path
    klass = BounceClass.complaint
    diagnostic = f"complaint ({feedback_type or 'no feedback type'})"
    agent = fields.get("user-agent", [""])[0]
    if agent:
        diagnostic += f" reported by {agent}"
    recipients = [
        FailedRecipient(address(r), "", "", "", diagnostic[:500], "", klass)
        for r in dict.fromkeys(rcpts or [""])
    ]
    return recipients, feedback_type, return_path
