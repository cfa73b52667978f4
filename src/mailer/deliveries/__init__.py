"""The delivery rows: one per (edition, subscriber), the truth of what was sent to whom.

Only the table and its states live here, below both sides that use it: the sending side
(``mailer.delivery``) writes the rows, and the bounces (``mailer.bounces``) read them to
tie a bounce to its delivery, act on it and count it against its edition. How a row moves
from state to state is the sending side's (``mailer.delivery.states``).
"""
