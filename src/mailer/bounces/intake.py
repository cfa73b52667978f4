"""The one way a bounce mail comes in, whatever brought it.

The bounce server, the mailbox poller and ``mailer bounces import`` all hand the raw bytes
of one message to :func:`receive`. It parses the message, ties each failed recipient to
the delivery it belongs to, and records one Bounce per recipient through
:func:`mailer.bounces.actions.record_bounce`, which applies the rules. So:

- a message is identified by the sha256 of its bytes: a re-import, a redelivered task or a
  message left in the mailbox after a crash records nothing twice;
- a DSN records one bounce per failed recipient (``Action: delayed`` is kept as
  ``delayed`` and acts on nobody); an ARF report records a ``complaint`` (an
  ``auth-failure`` or a ``not-spam`` report records nothing that acts);
- an auto-reply, an ordinary reply and a message nobody understands are kept (one Bounce
  of class autoreply, not-a-bounce or unparsed, with an excerpt) and act on nobody;
- a message over ``bounce_max_bytes`` is refused: kept as an unparsed Bounce that says so,
  with the start of the message as its excerpt;
- only a valid VERP token or a signed Message-ID ties a bounce to a reader; anything
  else (an address alone, a forged token, a made-up Message-ID) is recorded *unverified*
  and acts on nobody until staff confirm it (:mod:`mailer.bounces.attribute`);
- the same consequence is had once: a replayed DSN (new Message-ID or date, same
  message of ours and class) is recorded as a repeat and acts on nobody.

Nothing here raises on bad input; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from mailer.bounces.actions import EXCERPT_LIMIT, record_bounce
from mailer.bounces.attribute import Attribution, attribute
from mailer.bounces.models import BounceClass
from mailer.bounces.parse import (
    BounceReport,
    BounceTooLarge,
    FailedRecipient,
    OurAddresses,
    parse_bounce,
)
from mailer.bounces.parse.arf import NOT_COMPLAINTS
from mailer.config import BounceSettings

log = logging.getLogger(__name__)

#: What a report kind is recorded as when it names no failed recipient.
_KIND_CLASS = {
    "autoreply": BounceClass.autoreply,
    "not-a-bounce": BounceClass.not_a_bounce,
    "unparsed": BounceClass.unparsed,
}


@dataclass(frozen=True)
class Recorded:
    """One bounce this message added, and what was done about it."""

    bounce_id: int
    bounce_class: str
    recipient: str
    attribution: str
    action: str


@dataclass
class IntakeResult:
    fingerprint: str
    kind: str  # the report's kind (dsn, arf, autoreply, …), or "refused"
    recorded: list[Recorded] = field(default_factory=list)
    #: Bounces of this message that were recorded before (a repeat): nothing was done.
    repeats: int = 0
    #: Why the message was refused (too large), else "".
    refused: str = ""

    @property
    def summary(self) -> str:
        if self.refused:
            return f"refused: {self.refused}"
        if not self.recorded and self.repeats:
            return f"{self.kind}: already recorded"
        parts = [f"{r.bounce_class} {r.recipient or '-'} ({r.attribution}): {r.action}"
                 for r in self.recorded]
        return f"{self.kind}: " + ("; ".join(parts) if parts else "nothing recorded")


def fingerprint_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def receive(
    session: Session, *, raw: bytes, source: str, bounces: BounceSettings, ours: OurAddresses,
    keys: Sequence[bytes], envelope_to: Sequence[str] = (),
) -> IntakeResult:
    """Take in one bounce mail (raw bytes as received) from ``source`` (mx, imap, pop3,
    import): parse, attribute, record, act. ``envelope_to`` is the SMTP RCPT TO when the
    message came over SMTP (the VERP address); a mailbox has only the headers. Larger than
    ``bounces.bounce_max_bytes``: refused unparsed; ``bounces`` also says when soft bounces
    suppress. ``ours``: our own addresses (``settings.identity``), never taken for a failed
    recipient; ``keys`` (``Settings.all_secrets``) check the VERP tokens and Message-IDs."""
    fingerprint = fingerprint_of(raw)
    cap = bounces.bounce_max_bytes
    if len(raw) > cap:
        return refuse_too_large(session, head=raw[:EXCERPT_LIMIT], size=len(raw), source=source,
                                bounces=bounces)
    try:
        report = parse_bounce(raw, ours=ours, envelope_to=envelope_to, max_bytes=cap)
    except BounceTooLarge as exc:
        return _refuse(session, raw[:EXCERPT_LIMIT], source, fingerprint, str(exc), bounces)
    except Exception as exc:  # the parser promises not to raise; a bug must not lose mail
        log.exception("the bounce parser failed on a message", extra={"fingerprint": fingerprint})
        report = _unparsed(raw, f"parser error: {type(exc).__name__}: {exc}")

    result = IntakeResult(fingerprint=fingerprint, kind=report.kind)
    failures: list[FailedRecipient | None] = list(report.recipients) or [None]
    for failure in failures:
        attribution = _attribute(session, report, failure, ours, keys)
        klass = _class_of(report, failure)
        bounce = record_bounce(
            session,
            bounces=bounces,
            bounce_class=klass,
            source=source,
            recipient=failure.recipient if failure else "",
            status_code=failure.status if failure else "",
            diagnostic=(failure.diagnostic if failure else "") or report.error
            or (report.feedback_type and f"feedback type: {report.feedback_type}") or "",
            remote_mta=failure.remote_mta if failure else "",
            delivery_id=attribution.delivery_id,
            edition_id=attribution.edition_id,
            subscriber_id=attribution.subscriber_id,
            confirmation_token_id=attribution.confirmation_token_id,
            attribution=attribution.method,
            attribution_note=attribution.note,
            unverified=attribution.unverified,
            claimed_delivery_id=attribution.claimed_delivery_id,
            claimed_subscriber_id=attribution.claimed_subscriber_id,
            raw_excerpt=report.excerpt,
            fingerprint=fingerprint,
            strength=failure.strength if failure else None,
        )
        if bounce is None:
            result.repeats += 1
            continue
        result.recorded.append(Recorded(bounce.id, bounce.bounce_class, bounce.recipient,
                                        bounce.attribution, bounce.action))
    return result


def _class_of(report: BounceReport, failure: FailedRecipient | None) -> BounceClass:
    if failure is not None:
        return BounceClass(failure.bounce_class)
    if report.kind == "arf":
        # An ARF report that names no recipient is still a complaint about the quoted
        # message, unless the reader said "not spam" or it reports an auth failure.
        if report.feedback_type in NOT_COMPLAINTS:
            return BounceClass.not_a_bounce
        return BounceClass.complaint
    # A DSN or a heuristic parse that named nobody: understood by nobody after all.
    return _KIND_CLASS.get(report.kind, BounceClass.unparsed)


def _attribute(session: Session, report: BounceReport, failure: FailedRecipient | None,
               ours: OurAddresses, keys: Sequence[bytes]) -> Attribution:
    try:
        return attribute(session, report, failure, ours=ours, keys=keys)
    except Exception as exc:  # a bug in attribution must not lose the bounce
        log.exception("attribution failed")
        return _nobody(f"attribution error: {type(exc).__name__}: {exc}")


def _nobody(note: str) -> Attribution:
    return Attribution(method="none", note=note)


def _unparsed(raw: bytes, error: str) -> BounceReport:
    return BounceReport(
        kind="unparsed", recipients=[], addressed_to=[], original_message_id="",
        original_return_path="", subject="", message_id="", feedback_type="", error=error,
        excerpt=raw[:EXCERPT_LIMIT].decode("utf-8", "replace"),
    )


def refuse_too_large(session: Session, *, head: bytes, size: int, source: str,
                     bounces: BounceSettings) -> IntakeResult:
    """A message over ``bounces.bounce_max_bytes``, of which the caller read only the
    ``head`` (a mailbox need not download 50 MB to learn it is too large): refused, and
    kept as an unparsed Bounce that says so."""
    cap = bounces.bounce_max_bytes
    fingerprint = hashlib.sha256(head[:EXCERPT_LIMIT] + f"\x00{size}".encode()).hexdigest()
    return _refuse(session, head, source, fingerprint,
                   f"{size} bytes is over the bounce size cap of {cap} bytes", bounces)


def _refuse(session: Session, head: bytes, source: str, fingerprint: str,
            reason: str, bounces: BounceSettings) -> IntakeResult:
    """Keep a refused message as an unparsed Bounce that says why, with its start."""
    result = IntakeResult(fingerprint=fingerprint, kind="refused", refused=reason)
    bounce = record_bounce(
        session, bounces=bounces, bounce_class=BounceClass.unparsed, source=source,
        diagnostic=f"refused: {reason}", attribution="none",
        attribution_note="not parsed: too large",
        raw_excerpt=head[:EXCERPT_LIMIT].decode("utf-8", "replace"), fingerprint=fingerprint,
    )
    if bounce is None:
        result.repeats += 1
    else:
        result.recorded.append(Recorded(bounce.id, bounce.bounce_class, "", "none",
                                        bounce.action))
    return result
