"""The confirmations queue: double opt-in mails, never stuck behind a newsletter send."""

from __future__ import annotations

import random

from mailer.subscribers.confirmation_mail import Outcome, send_confirmation_mail
from workers.app import app


@app.task(bind=True, max_retries=8)
def send_confirmation(self, subscriber_id: int) -> str:  # type: ignore[no-untyped-def]
    outcome = send_confirmation_mail(subscriber_id)
    if outcome == Outcome.retry:
        # 30 s, 1 min, 2 min … capped at 1 h, with jitter so retries do not march in step.
        delay = min(3600, 30 * 2 ** self.request.retries) * random.uniform(0.8, 1.2)
        raise self.retry(countdown=delay)
    return str(outcome)
