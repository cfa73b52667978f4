"""The bulk queue: an edition's deliveries, a range of delivery ids per task.

The task is thin: the delivery rows hold the truth and ``mailer.delivery.sender`` does the
work. Run twice, a batch sends nothing twice: every delivery is claimed in the database.
Nothing is retried through Celery: what must wait is ``deferred`` in the database with the
time it is due, and the sweeper queues it then.
"""

from __future__ import annotations

import logging

from mailer import tasks
from mailer.config import get_settings
from mailer.db import transaction
from mailer.delivery import sender
from mailer.delivery import service as sending
from workers.app import app

log = logging.getLogger(__name__)


@app.task(name=tasks.SEND_BATCH, bind=True)
def send_batch(self, edition_id: int, first_id: int | list[int],  # type: ignore[no-untyped-def]
               last_id: int | None = None) -> None:
    if isinstance(first_id, list):  # a message queued by an older version: a list of ids
        if not first_id:
            return
        ids = first_id
        first_id, last_id = min(ids), max(ids)
    assert last_id is not None
    result = sender.send_batch(edition_id, first_id, last_id, get_settings())
    with transaction() as session:
        sending.finish_if_done(session, edition_id)
    log.info("batch done: %s%s", dict(result.counts),
             f" (stopped: {result.stopped})" if result.stopped else "",
             extra={"edition_id": edition_id, "task_id": self.request.id})
    # Nothing returned: this line is the batch's summary; Celery's own says only "None".
