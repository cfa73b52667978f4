"""Tying a bounce to what we sent: the delivery, the edition, the subscriber.

Three ways, most trustworthy first:

1. The VERP token in the address the bounce came back to (``bounces+d1f3-<sig>@…``), or in
   the quoted original's Return-Path. It is signed: a token whose signature fails is
   backscatter or forgery, and then *nobody* is attributed, not even a subscriber whose
   address the bounce happens to name — otherwise anyone could unsubscribe anyone by
   mailing us a fake bounce.
2. The Message-ID of the quoted original, when it is one of ours (``parse_message_id``
   checks its digest): a newsletter delivery or a confirmation mail.
3. The failed address itself, only when it is a known subscriber.

Read-only: this module looks rows up and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.bounces.parse import BounceReport, FailedRecipient
from mailer.delivery.models import Delivery
from mailer.emails.message import parse_message_id
from mailer.emails.verp import VerpToken, parse_return_path
from mailer.subscribers.addresses import InvalidAddress, normalise
from mailer.subscribers.models import ConfirmationToken, Subscriber


@dataclass(frozen=True)
class Attribution:
    method: str  # "verp", "message-id", "recipient", "none"
    note: str  # why, in words
    delivery_id: int | None = None
    edition_id: int | None = None
    subscriber_id: int | None = None
    confirmation_token_id: int | None = None


def attribute(session: Session, report: BounceReport,
              recipient: FailedRecipient | None) -> Attribution:
    """Who this bounce (for this one recipient of it) belongs to, and why we think so."""
    token, where, forged = find_verp_token(report)
    if token is not None:
        return _by_token(session, token, where)
    if forged:
        return Attribution("none", forged_note(forged))
    by_id = _by_message_id(session, report.original_message_id)
    if by_id is not None:
        return by_id
    return _by_recipient(session, recipient)


def forged_note(address: str) -> str:
    return f"VERP token {address.split('@')[0]} forged (signature fails): nobody attributed"


def find_verp_token(report: BounceReport) -> tuple[VerpToken | None, str, str]:
    """(a valid token, the address it was in, the first forged address ('' if none))."""
    forged = ""
    for address in [*report.addressed_to, report.original_return_path]:
        if not address:
            continue
        parsed = parse_return_path(address)
        if isinstance(parsed, VerpToken):
            return parsed, address, ""
        if parsed is False and not forged:
            forged = address
    return None, "", forged


def _by_token(session: Session, token: VerpToken, where: str) -> Attribution:
    local = where.split("@")[0]
    if token.kind == "delivery":
        delivery = session.get(Delivery, token.id)
        if delivery is None:
            return Attribution("verp", f"VERP token {local}: signature valid, but delivery "
                                       f"{token.id} no longer exists")
        return Attribution(
            "verp", f"VERP token {local}: signature valid, delivery {delivery.id}",
            delivery_id=delivery.id, edition_id=delivery.edition_id,
            subscriber_id=delivery.subscriber_id,
        )
    if token.kind == "confirmation":
        return _confirmation(session, token.id, f"VERP token {local}: signature valid")
    return Attribution("verp", f"VERP token {local}: a staff test copy, no subscriber")


def _confirmation(session: Session, token_id: int, how: str) -> Attribution:
    row = session.get(ConfirmationToken, token_id)
    if row is None:
        return Attribution("none", f"{how}, but confirmation {token_id} no longer exists")
    return Attribution(
        "verp" if how.startswith("VERP") else "message-id",
        f"{how}, confirmation mail {token_id}",
        subscriber_id=row.subscriber_id, confirmation_token_id=row.id,
    )


def _by_message_id(session: Session, message_id: str) -> Attribution | None:
    if not message_id:
        return None
    parsed = parse_message_id(message_id)
    if parsed is None:
        return None  # not ours, or altered: says nothing about who it was
    kind, parts = parsed
    how = f"quoted Message-ID {message_id}"
    if kind == "nl" and len(parts) == 2 and all(p.isdigit() for p in parts):
        edition_id, delivery_id = int(parts[0]), int(parts[1])
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.edition_id != edition_id:
            return Attribution("none", f"{how} names delivery {delivery_id}, which no "
                                       "longer exists")
        return Attribution(
            "message-id", f"{how}: delivery {delivery.id}", delivery_id=delivery.id,
            edition_id=delivery.edition_id, subscriber_id=delivery.subscriber_id,
        )
    if kind == "confirm" and len(parts) == 1 and parts[0].isdigit():
        return _confirmation(session, int(parts[0]), how)
    return Attribution("none", f"{how}: a {kind!r} message, no subscriber")


def _by_recipient(session: Session, recipient: FailedRecipient | None) -> Attribution:
    """The address we sent to is the DSN's Original-Recipient when the final one is an
    alias it expanded to; either may be the subscriber's."""
    addresses = [a for a in (recipient.original_recipient, recipient.recipient) if a] \
        if recipient else []
    if not addresses:
        return Attribution("none", "no VERP token, no Message-ID of ours, no recipient address")
    for address in dict.fromkeys(addresses):
        try:
            _, key = normalise(address)
        except InvalidAddress:
            # With MAILER_CHECK_DELIVERABILITY on, a domain that no longer exists fails
            # validation: exactly the hard bounce we want to match. Keys are lowercase.
            key = address.strip().lower()
        subscriber_id = session.scalar(select(Subscriber.id).where(Subscriber.email_key == key))
        if subscriber_id is not None:
            return Attribution("recipient", f"no VERP token or Message-ID of ours; {address} "
                                            f"is subscriber {subscriber_id}",
                               subscriber_id=subscriber_id)
    return Attribution("none", f"no VERP token or Message-ID of ours; {addresses[-1]} is not "
                               "a subscriber")
