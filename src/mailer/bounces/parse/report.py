"""What the parser answers: one report per mail, one entry per failed recipient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailer.bounces.classes import BounceClass
from mailer.bounces.parse.decoding import address

#: How much of the raw message a report keeps as evidence.
EXCERPT_BYTES = 8 * 1024


@dataclass(frozen=True)
class OurAddresses:
    """Our own addresses, which a bounce names but which never failed: the From address
    of our mail and the domain of its VERP return paths. Handed in by the caller (from
    ``settings.identity``, or :class:`mailer.environment.BounceReading`)."""

    from_email: str
    bounce_domain: str

    @classmethod
    def of(cls, identity: _HasOurAddresses) -> OurAddresses:
        return cls(from_email=identity.from_email, bounce_domain=identity.bounce_domain)

    @property
    def sending_domain(self) -> str:
        """The domain of our Message-IDs (``identity.sending_domain``)."""
        return self.from_email.rpartition("@")[2]


class _HasOurAddresses(Protocol):
    @property
    def from_email(self) -> str: ...

    @property
    def bounce_domain(self) -> str: ...


class BounceTooLarge(ValueError):
    """The input is over ``settings.bounces.bounce_max_bytes``: refused before it is parsed."""


@dataclass(frozen=True)
class FailedRecipient:
    recipient: str  # Final-Recipient address (lowercased domain), '' if unknown
    original_recipient: str  # Original-Recipient or ''
    action: str  # failed, delayed, delivered, relayed, expanded; '' when not from a DSN
    status: str  # enhanced status "5.1.1" or ''
    diagnostic: str  # Diagnostic-Code text, or the line the heuristic matched
    remote_mta: str
    bounce_class: BounceClass
    #: For a hard bounce, how strong the evidence is: "strong" suppresses at once, "weak"
    #: only when a second bounce confirms it (see mailer.bounces.classify). '' otherwise.
    strength: str = ""


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


def unparsed_recipient(guess: str) -> FailedRecipient:
    """A recipient nobody could classify (``guess`` is the address it may be, or '')."""
    return FailedRecipient(address(guess), "", "", "", "", "", BounceClass.unparsed)
