"""The default queue: periodic housekeeping started by beat. Every task is idempotent."""

from __future__ import annotations

import datetime as dt
import logging

from mailer.db import transaction
from mailer.subscribers import service as subscribers
from workers.app import app

log = logging.getLogger(__name__)


@app.task
def sweep() -> dict[str, int]:
    """Put back to work what a dead worker or a lost Redis message left behind."""
    from workers.confirmations import send_confirmation

    with transaction() as session:
        stranded = subscribers.confirmations_to_resend(session, older_than=dt.timedelta(minutes=2))
    for subscriber_id in stranded:
        send_confirmation.delay(subscriber_id)
    return {"confirmations": len(stranded)}


@app.task
def purge_pending_signups() -> int:
    with transaction() as session:
        purged = subscribers.purge_pending(session)
    if purged:
        log.info("purged %d unconfirmed sign-ups", purged)
    return purged
