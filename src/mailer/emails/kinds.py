"""The kinds of message the service sends, one name each, and how each is spelled on the wire.

In code a kind has one name (``MessageKind.delivery``, a newsletter edition sent to one
reader). On the wire it keeps the spellings mail already sent carries, so that a bounce of
an old message still ties to what it was: the VERP letter of the return path
(:mod:`mailer.emails.verp`) and the first part of the Message-ID
(:mod:`mailer.emails.message`).
"""

from __future__ import annotations

from enum import StrEnum


class MessageKind(StrEnum):
    delivery = "delivery"  # an edition, to one reader (a row of the delivery table)
    confirmation = "confirmation"  # the double opt-in mail (a confirmation token)
    test = "test"  # a staff member's test copy of an edition
    review = "review"  # the editors' "a draft waits for your review"


#: ``bounces+<letter><id>-…``: only kinds a bounce can be tied back to have one.
VERP_LETTER = {MessageKind.delivery: "d", MessageKind.confirmation: "c", MessageKind.test: "t"}
#: ``<prefix>.<parts>.<signature>@…``
MESSAGE_ID_PREFIX = {MessageKind.delivery: "nl", MessageKind.confirmation: "confirm",
                     MessageKind.test: "test", MessageKind.review: "review"}

_LETTER_OF: dict[str, str] = {kind.value: letter for kind, letter in VERP_LETTER.items()}
_PREFIX_OF: dict[str, str] = {kind.value: prefix for kind, prefix in MESSAGE_ID_PREFIX.items()}
_BY_LETTER = {letter: kind for kind, letter in VERP_LETTER.items()}
_BY_PREFIX = {prefix: kind for kind, prefix in MESSAGE_ID_PREFIX.items()}


def of_verp_letter(letter: str) -> MessageKind:
    return _BY_LETTER[letter]


def verp_letter(kind: MessageKind | str) -> str:
    """Raises KeyError for a kind no bounce is tied back to (a review mail)."""
    return _LETTER_OF[kind]


def message_id_prefix(kind: MessageKind | str) -> str:
    """A kind's wire spelling; a spelling itself (``"nl"``, as tests of old mail write it)
    stays as it is."""
    return _PREFIX_OF.get(kind, kind)


def of_message_id_prefix(prefix: str) -> MessageKind | None:
    return _BY_PREFIX.get(prefix)
