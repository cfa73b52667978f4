"""The bulk queue: an edition's deliveries, a batch of ids per task.

The task is thin: the delivery rows hold the truth and ``mailer.delivery.sender`` does the
work. Run twice, a batch sends nothing twice: every delivery is claimed in the database.
"""

from __future__ import annotations

import logging

from mailer.db import transaction
from mailer.delivery import sender, service
from workers.app import app

log = logging.getLogger(__name__)


@app.task(bind=True)
def send_batch(self, edition_id: int, delivery_ids: list[int]) -> dict[str, object]:  # type: ignore[no-untyped-def]
    result = sender.send_batch(edition_id, delivery_ids)
    if result.retry_ids:
        send_batch.apply_async((edition_id, result.retry_ids), countdown=result.retry_in,
                               queue="bulk")
    with transaction() as session:
        service.finish_if_done(session, edition_id)
    log.info("batch done: %s%s", dict(result.counts),
             f" (stopped: {result.stopped})" if result.stopped else "",
             extra={"edition_id": edition_id, "task_id": self.request.id})
    return {"counts": dict(result.counts), "stopped": result.stopped}
