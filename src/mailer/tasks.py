"""The tasks the workers run, by name, and the one way to ask for one: :func:`publish`.

Code under ``src/`` never imports a worker: it publishes a task by its name, and the
``workers`` package (thin consumers, ``@app.task(name=tasks.SEND_BATCH)``) does the rest.
The names are the ones already on the wire (a message queued by an older version is still
understood), and every queue name is written here once: ``workers/app.py`` declares these
queues and routes, ``mailer.ops.queues`` reads their depths.

A task published inside a transaction goes out only once that transaction has committed
(:func:`mailer.db.publish_after_commit`): a worker never sees an id whose row is not there
yet, and a rollback sends nothing. Publishing at once is said with ``session=None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session


# --- queues ------------------------------------------------------------------------------------

#: Double opt-in mails (and the welcome after them): never stuck behind a newsletter send.
CONFIRMATIONS = "confirmations"
#: An edition's deliveries, a range of delivery ids per task.
BULK = "bulk"
#: Housekeeping, bounces, the editors' review mails.
DEFAULT = "default"
#: Outgoing webhooks: a slow receiver never holds up a mail.
WEBHOOKS = "webhooks"
QUEUES = (BULK, CONFIRMATIONS, DEFAULT, WEBHOOKS)

# --- tasks (names as on the wire) ----------------------------------------------------------------

SEND_BATCH = "workers.bulk.send_batch"
SEND_CONFIRMATION = "workers.confirmations.send_confirmation"
SEND_WELCOME = "workers.confirmations.send_welcome"
SEND_PREFERENCE_REQUEST = "workers.confirmations.send_preference_request"
SEND_DATA_EXPORT = "workers.confirmations.send_data_export"
PROCESS_INBOUND = "workers.bounces.process_inbound"
PROCESS_SPOOL = "workers.bounces.process_spool"
POLL_MAILBOX = "workers.bounces.poll_mailbox"
SWEEP = "workers.maintenance.sweep"
PURGE_PENDING_SIGNUPS = "workers.maintenance.purge_pending_signups"
POLL_FEEDS = "workers.maintenance.poll_feeds"
DRAFT_NEXT_EDITION = "workers.maintenance.draft_next_edition"
DRAFT_LIST_EDITIONS = "workers.maintenance.draft_list_editions"
MAIL_EDITORS = "workers.maintenance.mail_editors"
FLUSH_CLICKS = "workers.maintenance.flush_clicks"
REPORT_EDITION = "workers.maintenance.report_edition"
DELIVER_WEBHOOK = "workers.webhooks.deliver"
SWEEP_WEBHOOKS = "workers.webhooks.sweep"

#: The queue of every task that does not run on :data:`DEFAULT`.
QUEUE_OF = {SEND_BATCH: BULK, SEND_CONFIRMATION: CONFIRMATIONS, SEND_WELCOME: CONFIRMATIONS,
            SEND_PREFERENCE_REQUEST: CONFIRMATIONS, SEND_DATA_EXPORT: CONFIRMATIONS,
            DELIVER_WEBHOOK: WEBHOOKS}


def queue_of(task: str) -> str:
    return QUEUE_OF.get(task, DEFAULT)


def publish(task: str, *args: object, session: Session | None,
            countdown: float | None = None) -> None:
    """Ask a worker to run ``task`` with ``args`` (JSON: ids, never objects).

    ``session``: the transaction the task depends on; the task is sent once it commits (and
    never, if it rolls back). A broker that is away then is logged, not raised: what the
    task was for is in the database, and the sweeper or a beat task queues it again.
    ``session=None``: sent now; a broker that is away raises.
    """
    if session is None:
        _send(task, args, countdown)
    else:
        # Imported here: a command that reads only the names above (the bounce parser's
        # message kinds) does not load SQLAlchemy (tests/test_cli_startup.py).
        from mailer.db import publish_after_commit

        publish_after_commit(session, lambda: _send(task, args, countdown))


def publish_many(task: str, calls: Iterable[Sequence[object]], *,
                 session: Session | None) -> int:
    """:func:`publish` for many calls of one task (an edition's batches): all go out
    through one producer, one connection, once the session commits. Returns how many."""
    batch = [tuple(args) for args in calls]
    if batch:
        if session is None:
            _send_many(task, batch)
        else:
            from mailer.db import publish_after_commit

            publish_after_commit(session, lambda: _send_many(task, batch))
    return len(batch)


def _redis_url() -> str:
    # Imported here: the message-kind registry imports this module for its queue names, and
    # reading a VERP token (mailer bounces classify) must not load the settings models.
    from mailer.config import get_settings

    return get_settings().redis_url


def _send_many(task: str, batch: list[tuple[object, ...]]) -> None:
    app = client(_redis_url())
    queue = queue_of(task)
    with app.producer_or_acquire() as producer:
        for args in batch:
            app.send_task(task, args=list(args), queue=queue, producer=producer)


def _send(task: str, args: tuple[object, ...], countdown: float | None) -> None:
    client(_redis_url()).send_task(task, args=list(args), queue=queue_of(task),
                                   countdown=countdown)


_CLIENTS: dict[str, Celery] = {}


def client(broker_url: str) -> Celery:
    """A Celery app that only publishes, by task name: what publishes (the web app, the
    bounce server, the CLI, a worker) needs the broker, not the ``workers`` package (which
    a development install leaves off the path of the ``mailer`` command)."""
    app = _CLIENTS.get(broker_url)
    if app is None:
        from celery import Celery  # a command that publishes nothing does not load Celery

        app = Celery("mailer-publisher", set_as_current=False)
        app.conf.update(broker_url=broker_url, task_serializer="json",
                        accept_content=["json"], broker_connection_retry_on_startup=True,
                        task_send_sent_event=True)
        _CLIENTS[broker_url] = app
    return app


def reset() -> None:
    """Forget the publishing clients and their connections (after a fork, or when tests
    point the settings at another Redis)."""
    from kombu import pools

    while _CLIENTS:
        _, app = _CLIENTS.popitem()
        if app._pool is not None:
            app._pool.force_close_all()
            app._pool = None
        app.amqp._producer_pool = None
    pools.reset()  # kombu's registry would hand back a closed pool for a URL seen before
