"""Mailing lists and the subscriptions of a person to them (issue 12).

A person is one :class:`~mailer.subscribers.models.Subscriber` (one canonical address, one
GDPR record); each (person, list) pair is one :class:`Subscription` with its own status and
consent history. Suppression stays per address and global (``mailer.suppression``).
"""
