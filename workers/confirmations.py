"""The confirmations queue: double opt-in mails, never stuck behind a newsletter send."""

from __future__ import annotations

import random

from mailer import tasks
from mailer.subscribers.confirmation_mail import Outcome, send_confirmation_mail
from workers.app import app


@app.task(name=tasks.SEND_CONFIRMATION, bind=True, max_retries=8)
def send_confirmation(self, subscriber_id: int) -> str:  # type: ignore[no-untyped-def]
    # 30 s, 1 min, 2 min … capped at 1 h, with jitter so retries do not march in step.
    delay = min(3600, 30 * 2 ** self.request.retries) * random.uniform(0.8, 1.2)
    outcome = send_confirmation_mail(subscriber_id, retry_in=delay)
    if outcome == Outcome.retry:
        # Once the retries run out, the sweeper queues the mail again after the delay.
        raise self.retry(countdown=delay)
    return str(outcome)
