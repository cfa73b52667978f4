"""The classes of bounce, without the database: the parser and the CLI use them alone."""

from __future__ import annotations

import enum


class BounceClass(enum.StrEnum):
    hard = "hard"  # mailbox or domain does not exist
    soft = "soft"  # temporary: mailbox full, server busy
    policy = "policy"  # blocked, spam-filtered, DMARC: the sender's problem
    delayed = "delayed"  # a warning, delivery still being tried
    autoreply = "autoreply"  # vacation message: not a bounce
    complaint = "complaint"  # the reader pressed "spam"
    unparsed = "unparsed"  # kept, counted, understood by nobody yet
    not_a_bounce = "not-a-bounce"  # an ordinary reply to the return path: kept, no action
