"""What can go wrong with an edition, in words the staff understand.

Defined apart so that the service, the composer and the snapshot can all raise them
without importing each other; ``mailer.editions.service`` is where callers import them.
"""

from __future__ import annotations


class EditionError(Exception):
    """A change or a check on an edition that cannot be done; the message says why."""


class NotSendable(EditionError):
    """The edition cannot be sent as it is (no articles, HTML over the size budget)."""
