"""Tying a bounce to what we sent: the delivery, the edition, the subscriber.

Anyone can send mail to the bounce server or the bounce mailbox, so a bounce that arrives
by mail acts on a reader only when something *we signed* ties it to a message we sent to
that reader:

1. the VERP token in the address the bounce came back to (``bounces+d1f3-<sig>@…``), or in
   the quoted original's Return-Path (an HMAC keyed with the secret key);
2. the Message-ID of the quoted original (or of ``In-Reply-To``), which carries an HMAC too
   (:func:`mailer.emails.message.message_id`).

When a tie is found and the bounce names a failed address, the address must not be
another subscriber's: a token of Anna's delivery in a DSN about Bob's address is not
evidence about anybody. (An address that is no subscriber's — the mailbox a reader
forwards to — is fine: the token says whose message it was.)

Everything else is *unverified*: a DSN that only names a subscriber's address, a forged
token, a made-up Message-ID (sequential delivery ids, the unkeyed digest our ids carried
before they were signed). It is kept as evidence, with who it names
(``claimed_subscriber_id``) and why it could not be tied (``unverified``), and acts on
nobody until a staff member confirms it (:func:`mailer.bounces.actions.confirm_bounce`).

Provider webhooks are authentic by their own signature, so :func:`attribute_event` also
ties by the address. Read-only: this module looks rows up and changes nothing. The caller
hands in the secrets the signatures are checked with (``keys``, ``Settings.all_secrets``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.bounces.models import UNVERIFIED_REASONS
from mailer.bounces.parse import BounceReport, FailedRecipient, OurAddresses
from mailer.deliveries.models import Delivery
from mailer.emails.kinds import MessageType, Ties, of_message_id_prefix, type_of
from mailer.emails.message import looks_like_ours, parse_message_id
from mailer.emails.verp import VerpToken, parse_return_path
from mailer.subscribers.addresses import InvalidAddress, normalise
from mailer.subscribers.models import ConfirmationToken, Subscriber

#: Why an unverified bounce could not be tied (the ``reason`` label of
#: ``mailer_bounces_unverified_total``).
NO_TOKEN = "no-token"  # noqa: S105 - a reason, not a secret
FORGED_TOKEN = "forged-token"  # noqa: S105 - a reason, not a secret
FORGED_MESSAGE_ID = "forged-message-id"
UNKNOWN_MESSAGE = "unknown-message"
OTHER_RECIPIENT = "other-recipient"
assert (NO_TOKEN, FORGED_TOKEN, FORGED_MESSAGE_ID, UNKNOWN_MESSAGE,
        OTHER_RECIPIENT) == UNVERIFIED_REASONS


@dataclass(frozen=True)
class Attribution:
    method: str  # "verp", "message-id", "recipient" (provider webhooks only), "none"
    note: str  # why, in words
    delivery_id: int | None = None
    edition_id: int | None = None
    subscriber_id: int | None = None
    confirmation_token_id: int | None = None
    #: "" when the bounce is tied (or names nobody it could act on); else the reason.
    unverified: str = ""
    #: Who an unverified bounce names: the delivery a valid token named, the subscriber
    #: whose address the bounce gives. Evidence only; nothing acts on them.
    claimed_delivery_id: int | None = None
    claimed_subscriber_id: int | None = None

    @property
    def act_target(self) -> str:
        """What a consequence of this bounce is about, for the at-most-once key."""
        if self.delivery_id is not None:
            return f"d{self.delivery_id}"
        if self.confirmation_token_id is not None:
            return f"c{self.confirmation_token_id}"
        return f"s{self.subscriber_id}" if self.subscriber_id is not None else ""


def attribute(session: Session, report: BounceReport, recipient: FailedRecipient | None, *,
              ours: OurAddresses, keys: Sequence[bytes]) -> Attribution:
    """Who this bounce mail (for this one recipient of it) belongs to, and why we think so.
    ``ours``: our addresses (a Message-ID at our sending domain that fails its signature is
    a forgery)."""
    named = subscriber_by_address(session, _addresses(recipient))
    claimed = named[0] if named else None
    token, where, forged = find_verp_token(report, keys=keys)
    if token is not None:
        return _checked(session, _by_token(session, token, where), recipient, named)
    if forged:
        return Attribution("none", forged_note(forged), unverified=FORGED_TOKEN,
                           claimed_subscriber_id=claimed)
    by_id = _by_message_id(session, report.original_message_id, keys)
    if by_id is not None:
        return _checked(session, by_id, recipient, named)
    if report.original_message_id and looks_like_ours(report.original_message_id,
                                                      sending_domain=ours.sending_domain):
        return Attribution(
            "none", f"quoted Message-ID {report.original_message_id} is not one we signed "
                    f"(forged or altered){_naming(named)}",
            unverified=FORGED_MESSAGE_ID, claimed_subscriber_id=claimed)
    return Attribution("none", f"no VERP token, no Message-ID of ours{_naming(named)}",
                       unverified=NO_TOKEN, claimed_subscriber_id=claimed)


def attribute_event(session: Session, *, message_id: str, recipient: str,
                    keys: Sequence[bytes]) -> Attribution:
    """A provider event (its request's signature checked): tied by the Message-ID it
    reports, else to a known subscriber by its address."""
    by_id = _by_message_id(session, message_id, keys)
    if by_id is not None and not by_id.unverified:
        return by_id
    named = subscriber_by_address(session, [recipient] if recipient else [])
    if named is None:
        return Attribution("none", f"no Message-ID of ours; {recipient or 'no address'} is "
                                   "not a subscriber")
    subscriber_id, address = named
    return Attribution("recipient", f"provider event (signature checked); {address} is "
                                    f"subscriber {subscriber_id}", subscriber_id=subscriber_id)


def forged_note(address: str) -> str:
    return f"VERP token {address.split('@')[0]} forged (signature fails): nobody attributed"


def find_verp_token(report: BounceReport, *,
                    keys: Sequence[bytes]) -> tuple[VerpToken | None, str, str]:
    """(a valid token, the address it was in, the first forged address ('' if none))."""
    forged = ""
    for address in [*report.addressed_to, report.original_return_path]:
        if not address:
            continue
        parsed = parse_return_path(address, keys=keys)
        if isinstance(parsed, VerpToken):
            return parsed, address, ""
        if parsed is False and not forged:
            forged = address
    return None, "", forged


def subscriber_by_address(session: Session, addresses: Sequence[str]) -> tuple[int, str] | None:
    """The first subscriber among ``addresses``, (id, address), or None."""
    for address in addresses:
        subscriber_id = session.scalar(select(Subscriber.id).where(
            Subscriber.email_key == _key(address)))
        if subscriber_id is not None:
            return subscriber_id, address
    return None


def _addresses(recipient: FailedRecipient | None) -> list[str]:
    """The address we sent to is the DSN's Original-Recipient when the final one is an alias
    it expanded to; either may be the subscriber's."""
    if recipient is None:
        return []
    return list(dict.fromkeys(a for a in (recipient.original_recipient, recipient.recipient)
                              if a))


def _key(address: str) -> str:
    try:
        return normalise(address)[1]
    except InvalidAddress:
        # With MAILER_CHECK_DELIVERABILITY on, a domain that no longer exists fails
        # validation: exactly the hard bounce we want to match. Keys are lowercase.
        return address.strip().lower()


def _naming(named: tuple[int, str] | None) -> str:
    if named is None:
        return "; it names no subscriber"
    return f"; it names {named[1]} (subscriber {named[0]}): not acted on"


def _checked(session: Session, tie: Attribution, recipient: FailedRecipient | None,
             named: tuple[int, str] | None) -> Attribution:
    """A tie holds when the bounce is not about another subscriber's address."""
    if tie.subscriber_id is None:
        if tie.unverified:
            return replace(tie, claimed_subscriber_id=named[0] if named else None)
        return tie
    keys = {_key(a) for a in _addresses(recipient)}
    ours = session.scalar(select(Subscriber.email_key).where(Subscriber.id == tie.subscriber_id))
    if named is None or named[0] == tie.subscriber_id or ours in keys:
        return tie
    return Attribution(
        "none", f"{tie.note}, but it is about {named[1]} (subscriber {named[0]}), not the "
                f"reader that message went to (subscriber {tie.subscriber_id}): not acted on",
        unverified=OTHER_RECIPIENT, claimed_delivery_id=tie.delivery_id,
        claimed_subscriber_id=tie.subscriber_id,
    )


def _by_token(session: Session, token: VerpToken, where: str) -> Attribution:
    how = f"VERP token {where.split('@')[0]}: signature valid"
    entry = type_of(token.kind)
    tie = _RULES[entry.ties](session, entry, how, [str(token.id)], "verp")
    assert tie is not None  # a token's one part is its row id: every rule takes it
    return tie


def _delivery(session: Session, entry: MessageType, how: str, parts: list[str],
              method: str) -> Attribution | None:
    """A delivery's token names its row; its Message-ID the edition and the row."""
    if method == "verp":
        delivery = session.get(Delivery, int(parts[0]))
        if delivery is None:
            return Attribution("verp", f"{how}, but delivery {parts[0]} no longer exists",
                               unverified=UNKNOWN_MESSAGE)
        note = f"{how}, delivery {delivery.id}"
    else:
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            return None
        edition_id, delivery_id = int(parts[0]), int(parts[1])
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.edition_id != edition_id:
            return Attribution("none", f"{how} names delivery {delivery_id}, which no "
                                       "longer exists", unverified=UNKNOWN_MESSAGE)
        note = f"{how}: delivery {delivery.id}"
    return Attribution(method, note, delivery_id=delivery.id, edition_id=delivery.edition_id,
                       subscriber_id=delivery.subscriber_id)


def _confirmation(session: Session, entry: MessageType, how: str, parts: list[str],
                  method: str) -> Attribution | None:
    """A confirmation mail's token and Message-ID both name its confirmation token."""
    if len(parts) != 1 or not parts[0].isdigit():
        return None
    token_id = int(parts[0])
    row = session.get(ConfirmationToken, token_id)
    if row is None:
        return Attribution("none", f"{how}, but confirmation {token_id} no longer exists",
                           unverified=UNKNOWN_MESSAGE)
    return Attribution(method, f"{how}, confirmation mail {token_id}",
                       subscriber_id=row.subscriber_id, confirmation_token_id=row.id)


def _nobody(session: Session, entry: MessageType, how: str, parts: list[str],
            method: str) -> Attribution | None:
    """Staff mail: tied, but to no reader."""
    if method == "verp":
        return Attribution("verp", f"{how.removesuffix(': signature valid')}: {entry.what}, "
                                   "no subscriber")
    return Attribution("message-id", f"{how}: a '{entry.kind}' message, no subscriber")


def _subscriber(session: Session, entry: MessageType, how: str, parts: list[str],
                method: str) -> Attribution | None:
    """A message to one reader (a welcome mail): its token and Message-ID name the
    subscriber first."""
    if not parts or not parts[0].isdigit():
        return None
    subscriber_id = int(parts[0])
    if session.get(Subscriber, subscriber_id) is None:
        return Attribution("none", f"{how}, but subscriber {subscriber_id} no longer exists",
                           unverified=UNKNOWN_MESSAGE)
    return Attribution(method, f"{how}, {entry.what} to subscriber {subscriber_id}",
                       subscriber_id=subscriber_id)


#: How a bounce of each kind of message is attributed, by what its registry entry ties to.
_RULES: dict[Ties, Callable[[Session, MessageType, str, list[str], str], Attribution | None]]
_RULES = {Ties.delivery: _delivery, Ties.confirmation: _confirmation,
          Ties.subscriber: _subscriber, Ties.nobody: _nobody}
assert set(_RULES) == set(Ties)


def _by_message_id(session: Session, message_id: str,
                   keys: Sequence[bytes]) -> Attribution | None:
    if not message_id:
        return None
    parsed = parse_message_id(message_id, keys=keys)
    if parsed is None:
        return None  # not ours, or altered: says nothing about who it was
    prefix, parts = parsed
    kind = of_message_id_prefix(prefix)
    how = f"quoted Message-ID {message_id} (signature valid)"
    if kind is not None:
        entry = type_of(kind)
        tie = _RULES[entry.ties](session, entry, how, parts, "message-id")
        if tie is not None:
            return tie
    return Attribution("message-id", f"{how}: a '{kind or prefix}' message, no subscriber")
