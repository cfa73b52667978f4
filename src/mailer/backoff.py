"""How long to wait before trying again: one rule for every retry.

The wait doubles with each retry, from ``base`` up to ``cap``, and is spread by ``jitter``
(±20 %), so that the retries of many readers, or of many tasks that failed together (a
relay or a database away for a minute), do not come back in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base: float  # seconds before the first retry
    cap: float  # the longest wait, before the jitter
    jitter: float = 0.2

    def seconds(self, retry: int) -> float:
        """The wait before retry number ``retry`` (0: the first retry)."""
        delay = min(self.cap, self.base * 2 ** max(0, retry))
        return delay * random.uniform(1 - self.jitter, 1 + self.jitter)


#: A confirmation mail the relay did not take: 30 s, 1 min, 2 min … at most an hour.
CONFIRMATION_MAIL = Backoff(base=30, cap=3600)
#: A spooled bounce whose processing failed.
BOUNCE_PROCESSING = Backoff(base=30, cap=3600)
#: The editors' review mails.
REVIEW_MAIL = Backoff(base=60, cap=3600)
#: The editors' report on an edition whose send has finished.
REPORT_MAIL = Backoff(base=60, cap=3600)
