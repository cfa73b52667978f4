"""Bounce tasks (default queue): process what the bounce server spooled, poll the mailbox.

Both are safe to run twice: a processed spool row is gone, and every bounce is recorded
under the fingerprint of its message, so a repeat records nothing.
"""

from __future__ import annotations

import datetime as dt
import logging

from mailer import backoff, tasks
from mailer.bounces import spool
from mailer.bounces.parse import OurAddresses
from mailer.config import get_settings
from mailer.db import transaction
from workers.app import app

log = logging.getLogger(__name__)


@app.task(name=tasks.PROCESS_INBOUND, bind=True, max_retries=5)
def process_inbound(self, inbound_id: int) -> str:  # type: ignore[no-untyped-def]
    """Parse, attribute and act on one message the bounce server accepted."""
    try:
        with transaction() as session:
            settings = get_settings()
            result = spool.process_spooled(
                session, inbound_id, bounces=settings.bounces,
                ours=OurAddresses.of(settings.identity), keys=settings.all_secrets)
    except Exception as exc:
        # The row stays in the spool; note why, and try again later (the beat task would
        # pick it up anyway).
        log.exception("processing spooled bounce %s failed", inbound_id)
        try:
            with transaction() as session:
                spool.note_failure(session, inbound_id, f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("could not note the failure of spooled bounce %s", inbound_id)
        raise self.retry(countdown=backoff.BOUNCE_PROCESSING.seconds(self.request.retries)) from exc
    if result is None:
        return "gone: processed already"
    log.info("bounce processed: %s", result.summary, extra={"inbound_id": inbound_id})
    return result.summary


@app.task(name=tasks.PROCESS_SPOOL)
def process_spool() -> int:
    """Queue again every spooled message a worker has not processed (a lost task)."""
    with transaction() as session:
        stale = spool.stale_spooled(session, older_than=dt.timedelta(minutes=2))
    for inbound_id in stale:
        tasks.publish(tasks.PROCESS_INBOUND, inbound_id, session=None)
    return len(stale)


@app.task(name=tasks.POLL_MAILBOX)
def poll_mailbox() -> dict[str, int]:
    """Fetch bounce mails from the IMAP and/or POP3 mailbox in the settings."""
    from mailer.bounces.mailbox import poll_configured

    settings = get_settings()
    return poll_configured(settings.bounces, ours=OurAddresses.of(settings.identity),
                           keys=settings.all_secrets, timeout=settings.smtp.timeout)
