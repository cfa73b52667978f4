"""Classifying one failure (an SMTP reply, or one recipient of a DSN) into a BounceClass.

A 5xx is not a hard bounce by itself: hard means the mailbox or the domain does not exist
(5.1.1, 5.1.2, 5.1.6, 5.1.10 and their wordings). Policy and authentication rejections
(5.7.x, 4.7.x: blocked, spam, DMARC, reputation) are the sender's problem and never
suppress a reader. Mailbox full (4.2.2 / 5.2.2) and other temporary trouble is soft.
"""

from __future__ import annotations

import re

from mailer.bounces.models import BounceClass

ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")

_HARD_STATUSES = {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1", "5.4.4"}
_SOFT_STATUSES = {"4.2.2", "5.2.2", "5.3.4", "4.4.1", "4.4.2", "4.4.7"}

_HARD_WORDS = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient|address|account|domain)"
    r"|(mailbox|user|account|recipient|address|e-?mail address)( \S+)? (does not|doesn't|did not) exist"
    r"|does not exist|doesn't exist|not a valid (mailbox|recipient|user)|invalid (recipient|mailbox|address)"
    r"|recipient (address )?(rejected|unknown|not found)|mailbox (not found|unavailable|is disabled)"
    r"|unknown (recipient|mailbox|local[- ]part)|account (has been |is )?(disabled|deactivated|closed|terminated)"
    r"|unrouteable|unroutable|host (or domain name )?not found|domain (not found|does not exist)"
    r"|no mx (record|host)|name or service not known|address rejected",
    re.IGNORECASE,
)
_POLICY_WORDS = re.compile(
    r"spam|blocked|block ?list|black ?list|dnsbl|rbl\b|reputation|dmarc|\bspf\b|\bdkim\b"
    r"|policy|not authori[sz]ed|authentication|access denied|banned|content rejected"
    r"|message rejected|rate limit|too many (messages|connections)|unsolicited|abuse",
    re.IGNORECASE,
)
_SOFT_WORDS = re.compile(
    r"mailbox (is )?full|over ?quota|quota exceeded|insufficient (system )?storage"
    r"|try again|temporar|greylist|deferred|too busy|out of storage",
    re.IGNORECASE,
)


def enhanced_status(text: str) -> str:
    """The first RFC 3463 enhanced status code in ``text`` ('' when there is none)."""
    match = ENHANCED.search(text or "")
    return ".".join(match.groups()) if match else ""


def classify(code: int | None, status: str, text: str) -> BounceClass:
    """Classify a failure from its basic SMTP code, enhanced status and wording."""
    status = status or enhanced_status(text)
    text = text or ""
    klass = status[:1] or (str(code)[:1] if code else "")
    if klass == "2":
        return BounceClass.delayed  # nothing failed (a DSN's "relayed"/"delivered")
    if status in _HARD_STATUSES and not _POLICY_WORDS.search(text):
        return BounceClass.hard
    if status in _SOFT_STATUSES:
        return BounceClass.soft
    if status.startswith(("5.7.", "4.7.")):
        # Some servers say "5.7.1 ... user unknown"; the wording wins over the code there.
        return BounceClass.hard if _HARD_WORDS.search(text) and not _POLICY_WORDS.search(text) \
            else BounceClass.policy
    if _POLICY_WORDS.search(text):
        return BounceClass.policy
    if klass == "4" or (code is not None and 400 <= code < 500) or code is None:
        return BounceClass.soft
    if _SOFT_WORDS.search(text):
        return BounceClass.soft
    if status in _HARD_STATUSES or status.startswith("5.1.") or _HARD_WORDS.search(text):
        return BounceClass.hard
    return BounceClass.soft  # an unexplained permanent failure: counted, not suppressed at once


def classify_reply(code: int | None, reply: str) -> tuple[BounceClass, str]:
    """An SMTP server's reply during our own send → (class, enhanced status)."""
    status = enhanced_status(reply)
    return classify(code, status, reply), status
