"""The webhooks queue: outgoing webhook deliveries (a slow receiver never holds up a mail),
and beat's sweep of the outbox (on the default queue, with the other sweeps)."""

from __future__ import annotations

import logging

from mailer import tasks
from mailer.config import get_settings
from mailer.db import transaction
from mailer.webhooks import sending
from workers.app import app

log = logging.getLogger(__name__)


@app.task(name=tasks.DELIVER_WEBHOOK)
def deliver(delivery_id: int) -> str:
    return sending.deliver(delivery_id, settings=get_settings().webhooks)


@app.task(name=tasks.SWEEP_WEBHOOKS)
def sweep() -> int:
    with transaction() as session:
        queued = sending.sweep(session, settings=get_settings().webhooks)
    if queued:
        log.info("webhooks sweep: %d deliveries queued again", queued)
    return queued
