"""What can go wrong with an edition, in words the staff understand.

Defined apart so that the service, the composer and the snapshot can all raise them
without importing each other; ``mailer.editions.service`` is where callers import them.
"""

from __future__ import annotations


class EditionError(Exception):
    """A change or a check on an edition that cannot be done; the message says why."""


class NotSendable(EditionError):
    """The edition cannot be sent as it is (no articles, HTML over the size budget)."""


class NotEditable(EditionError):
    """The edition has started to go out (or was cancelled): it cannot be changed now."""


class UnknownArticle(EditionError):
    """An article named for the edition does not exist."""


class NotInEdition(EditionError):
    """An article to drop or move is not one of the edition's."""


class AlreadyInEdition(EditionError):
    """An article to add is in the edition already."""
