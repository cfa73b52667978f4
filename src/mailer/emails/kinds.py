"""The kinds of message the service sends: one registry entry each.

In code a kind has one name (``MessageKind.delivery``, a newsletter edition sent to one
reader) and one :class:`MessageType` in :data:`TYPES`, which says everything the rest of the
service needs to know about it: the template folder it is rendered from, its two wire
spellings, what a bounce of it is tied to, the queue its task runs on, and whether it goes
out through the bulk sender.

The wire spellings are the ones mail already sent carries, so that a bounce of an old
message still ties to what it was: the VERP letter of the return path
(:mod:`mailer.emails.verp`) and the first part of the Message-ID
(:mod:`mailer.emails.message`). They must never change; a new kind takes new ones.

Adding a message type is one entry here and one folder under ``templates/email/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mailer import tasks


class MessageKind(StrEnum):
    delivery = "delivery"  # an edition, to one reader (a row of the delivery table)
    confirmation = "confirmation"  # the double opt-in mail (a confirmation token)
    test = "test"  # a staff member's test copy of an edition
    review = "review"  # the editors' "a draft waits for your review"
    welcome = "welcome"  # once a reader confirmed (MAILER_WELCOME_MAIL; a subscriber's id)
    report = "report"  # the editors' "how the edition went", once its send has finished
    #: From the preference page: "confirm that you want your data / to be erased" (a
    #: subscriber's id).
    preference_request = "preference_request"
    data_export = "data_export"  # the reader's data as a JSON attachment, once confirmed


class Ties(StrEnum):
    """What the id in a message's VERP token or Message-ID names: how a bounce of it is
    attributed (:mod:`mailer.bounces.attribute` has one rule for each)."""

    delivery = "delivery"  # a delivery row: its reader and its edition
    confirmation = "confirmation"  # a confirmation token: its reader
    subscriber = "subscriber"  # a subscriber row: that reader
    nobody = "nobody"  # staff mail: a bounce of it acts on no reader


@dataclass(frozen=True)
class MessageType:
    kind: MessageKind
    #: The folder under ``templates/email/`` (the edition's own for its copies).
    template: str
    #: The letter after ``bounces+``; None: sent from the newsletter's own address, no bounce
    #: is tied back to it.
    verp: str | None
    #: The first part of the Message-ID.
    message_id: str
    ties: Ties
    #: The Celery queue of the task that sends it; None: sent in the request that asks.
    queue: str | None
    #: Sent by the bulk sender (``mailer.delivery``), from the edition's frozen snapshot.
    bulk: bool = False
    #: How a note about a bounce of it names it.
    what: str = ""


TYPES: dict[MessageKind, MessageType] = {t.kind: t for t in (
    MessageType(MessageKind.delivery, template="digest", verp="d", message_id="nl",
                ties=Ties.delivery, queue=tasks.BULK, bulk=True, what="a newsletter"),
    MessageType(MessageKind.confirmation, template="confirm-subscription", verp="c",
                message_id="confirm", ties=Ties.confirmation, queue=tasks.CONFIRMATIONS,
                what="a confirmation mail"),
    MessageType(MessageKind.test, template="digest", verp="t", message_id="test",
                ties=Ties.nobody, queue=None, bulk=True, what="a staff test copy"),
    MessageType(MessageKind.review, template="edition-ready", verp=None, message_id="review",
                ties=Ties.nobody, queue=tasks.DEFAULT, what="a review mail"),
    MessageType(MessageKind.welcome, template="welcome", verp="w", message_id="welcome",
                ties=Ties.subscriber, queue=tasks.CONFIRMATIONS, what="a welcome mail"),
    MessageType(MessageKind.report, template="edition-report", verp=None, message_id="report",
                ties=Ties.nobody, queue=tasks.DEFAULT, what="an edition report"),
    MessageType(MessageKind.preference_request, template="preference-request", verp="p",
                message_id="request", ties=Ties.subscriber, queue=tasks.CONFIRMATIONS,
                what="a preference-page confirmation mail"),
    MessageType(MessageKind.data_export, template="data-export", verp="x", message_id="export",
                ties=Ties.subscriber, queue=tasks.CONFIRMATIONS, what="a data export"),
)}

_BY_LETTER = {t.verp: t.kind for t in TYPES.values() if t.verp}
_BY_PREFIX = {t.message_id: t.kind for t in TYPES.values()}
assert all(len(letter) == 1 for letter in _BY_LETTER), "a VERP kind is one letter"
assert len(_BY_LETTER) == sum(1 for t in TYPES.values() if t.verp), "a VERP letter twice"
assert len(_BY_PREFIX) == len(TYPES), "a Message-ID prefix twice"

#: ``bounces+<letter><id>-…``: only kinds a bounce can be tied back to have one.
VERP_LETTER = {kind: letter for letter, kind in _BY_LETTER.items()}
#: ``<prefix>.<parts>.<signature>@…``
MESSAGE_ID_PREFIX = {kind: prefix for prefix, kind in _BY_PREFIX.items()}


def type_of(kind: MessageKind | str) -> MessageType:
    """The registry entry of ``kind`` (raises KeyError for a name that is none)."""
    return TYPES[MessageKind(kind)]


def of_verp_letter(letter: str) -> MessageKind:
    return _BY_LETTER[letter]


def verp_letter(kind: MessageKind | str) -> str:
    """Raises KeyError for a kind no bounce is tied back to (a review mail)."""
    letter = type_of(kind).verp
    if letter is None:
        raise KeyError(kind)
    return letter


def message_id_prefix(kind: MessageKind | str) -> str:
    """A kind's wire spelling; a spelling itself (``"nl"``, as tests of old mail write it)
    stays as it is."""
    try:
        return type_of(kind).message_id
    except ValueError:
        return str(kind)


def of_message_id_prefix(prefix: str) -> MessageKind | None:
    return _BY_PREFIX.get(prefix)
