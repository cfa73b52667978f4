"""The Celery app on Redis.

- ``acks_late`` + ``reject_on_worker_lost``: a task whose worker dies is delivered again,
  so every task is written to be safe to run twice.
- JSON only: a task carries ids, never objects; the database holds the truth.
- prefetch 1: a worker holds one batch at a time, so pause and cancel act within a batch
  and a dead worker strands little.
- The visibility timeout is longer than any retry delay, else Redis would hand a
  scheduled retry to a second worker before its time.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from celery import Celery
from celery.schedules import crontab
from celery.signals import (
    after_setup_logger,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from kombu import Queue

from mailer import tasks
from mailer.config import Settings, get_settings
from mailer.logging import setup_logging


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("mailer", include=[
        "workers.confirmations", "workers.bulk", "workers.maintenance", "workers.bounces",
        "workers.webhooks",
    ])
    visibility = int(max(settings.sending.retry_max_seconds * 2, 3 * 3600))
    app.conf.update(
        broker_url=settings.redis_url,
        # kombu's Redis transport with the fix that keeps a Redis restart from killing the
        # worker (see workers/broker.py); another broker keeps its own transport.
        broker_transport=("workers.broker:Transport"
                          if settings.redis_url.startswith(("redis://", "rediss://")) else None),
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": visibility},
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        # Our JSON lines go to stderr as they are, not wrapped in Celery's own log format.
        worker_redirect_stdouts=False,
        task_default_queue=tasks.DEFAULT,
        task_queues=[Queue(name) for name in tasks.QUEUES],
        task_routes={name: {"queue": queue} for name, queue in tasks.QUEUE_OF.items()},
        task_send_sent_event=True,
        worker_send_task_events=True,
        timezone=settings.identity.timezone,
        enable_utc=True,
        beat_schedule=beat_schedule(settings),
    )
    return app


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """What beat runs and how often, from ``settings`` (``MAILER_*`` at process start)."""
    schedule: dict[str, dict[str, object]] = {
        "sweep-deliveries": {
            "task": tasks.SWEEP,
            "schedule": settings.sending.sweep_every_seconds,
        },
        "purge-pending-signups": {
            "task": tasks.PURGE_PENDING_SIGNUPS,
            "schedule": 3600.0,
        },
    }
    if settings.articles.feed_urls:
        schedule["poll-feeds"] = {
            "task": tasks.POLL_FEEDS,
            "schedule": settings.articles.feed_poll_minutes * 60.0,
        }
    # First Tuesday of every other month by default; "off" switches it off. Celery's crontab
    # wants both the day of the month and the day of the week to match (see rhythm.py).
    from mailer.editions.rhythm import edition_crontab

    drafting = edition_crontab(settings.editions.edition_schedule_cron)
    if drafting is not None:
        schedule["draft-next-edition"] = {
            "task": tasks.DRAFT_NEXT_EDITION,
            "schedule": drafting,
        }
    # The lists with a rhythm of their own, drafted in the hour it fires (rhythm.py).
    schedule["draft-list-editions"] = {
        "task": tasks.DRAFT_LIST_EDITIONS,
        "schedule": crontab(minute=1),
    }
    # What the bounce server accepted but no worker processed (a task lost with Redis).
    schedule["process-bounce-spool"] = {
        "task": tasks.PROCESS_SPOOL,
        "schedule": 60.0,
    }
    # Clicks counted in Redis by /r/…, added to the database (mailer.clicks.counting).
    schedule["flush-clicks"] = {
        "task": tasks.FLUSH_CLICKS,
        "schedule": 60.0,
    }
    # Outgoing webhooks that are due and that no task is on its way for (mailer.webhooks).
    schedule["sweep-webhooks"] = {
        "task": tasks.SWEEP_WEBHOOKS,
        "schedule": settings.webhooks.webhook_sweep_every_seconds,
    }
    if settings.bounces.imap_url or settings.bounces.pop3_url:
        schedule["poll-bounce-mailbox"] = {
            "task": tasks.POLL_MAILBOX,
            "schedule": settings.bounces.bounce_poll_minutes * 60.0,
        }
    return schedule


app = make_app()


_loglevel: list[int] = []


@after_setup_logger.connect
def _note_loglevel(loglevel: int | str | None = None, **_: object) -> None:
    """The worker's --loglevel, so that our own loggers keep to it too."""
    level = loglevel if isinstance(loglevel, int) else logging.getLevelName(str(loglevel).upper())
    if isinstance(level, int):
        _loglevel[:] = [level]


@worker_init.connect
def _yield_to_the_web(**_: object) -> None:
    """A send is work by the hour; a reader who follows a link waits for the answer. On a
    machine that runs both, the worker (and the pool processes it forks, which inherit it)
    runs at ``sending.worker_niceness``, so the web app's requests get a core first and
    the send has every cycle they leave."""
    niceness = get_settings().sending.worker_niceness
    if niceness > 0:
        try:
            current = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, max(current, min(niceness, 19)))
        except OSError as exc:  # a container that forbids it: the send runs as it is
            logging.getLogger(__name__).warning("could not lower the worker's priority: %s",
                                                exc)
        _lower_own_autogroup(min(niceness, 19))


def _lower_own_autogroup(niceness: int) -> None:
    """Linux with autogroups (``kernel.sched_autogroup_enabled``, on in Debian's kernels)
    shares the cores between sessions first and only then by niceness inside each. honcho
    (``make run``) starts every program in a session of its own, so a
    niceness alone changes nothing against the web app: the autogroup's own niceness does
    (sched(7)). Only a worker that leads its session has an autogroup of its own: one it
    shares (a worker started from a shell beside other programs) is left alone."""
    autogroup = Path("/proc/self/autogroup")
    if os.getsid(0) != os.getpid() or not autogroup.exists():
        return
    for attempt in range(20):
        try:  # "/autogroup-42 nice 0": never raised back up from a higher niceness
            current = int(autogroup.read_text().split()[-1])
            if current < niceness:
                autogroup.write_text(str(niceness))
            return
        except OSError as exc:
            # The kernel takes one such change every 100 ms from the whole machine (EAGAIN):
            # several workers started together wait their turn.
            if exc.errno != errno.EAGAIN or attempt == 19:
                logging.getLogger(__name__).warning(
                    "could not lower the worker's autogroup: %s", exc)
                return
            time.sleep(0.11)


@worker_process_init.connect
def _fresh_process(**_: object) -> None:
    # A forked child must not share the parent's database or SMTP sockets.
    from mailer.db import dispose_engines
    from mailer.redis import reset_redis

    setup_logging(level=_loglevel[0] if _loglevel else logging.INFO)
    dispose_engines()
    reset_redis()
    tasks.reset()


@worker_process_shutdown.connect
def _close_smtp(**_: object) -> None:
    from mailer.delivery.holders import me
    from mailer.emails.transport import close_process_transport
    from mailer.webhooks.sending import close_client

    close_process_transport()
    close_client()
    me.leave()  # a clean exit holds no claim: its sender_process row goes


def reset_broker() -> None:
    """Point the app at the Redis the settings name now (tests switch between servers)."""
    from kombu import pools

    app.conf.broker_url = get_settings().redis_url
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    pools.reset()  # kombu's registry would hand back the closed pool for a URL seen before
    tasks.reset()


# --- ops: worker heartbeats, task counters, the task id on every log line --------------------

_heartbeat: list[object] = []
_log_tokens: dict[str, object] = {}


@worker_ready.connect
def _start_heartbeat(sender: object = None, **_: object) -> None:
    """The worker's main process tells Redis it is alive (``mailer status``, /readyz)."""
    from mailer.ops.workers import Heartbeat

    try:
        hostname = str(getattr(sender, "hostname", "") or "worker")
        queues = sorted(q.name for q in sender.task_consumer.queues)  # type: ignore[attr-defined]
        concurrency = getattr(getattr(sender, "pool", None), "num_processes", None)
        _heartbeat.append(Heartbeat(hostname, {"pid": os.getpid(), "queues": queues,
                                               "concurrency": concurrency},
                                    ops=get_settings().ops).start())
    except Exception:  # never keep a worker from starting
        logging.getLogger(__name__).exception("could not start the worker heartbeat")


@worker_shutdown.connect
def _stop_heartbeat(**_: object) -> None:
    while _heartbeat:
        _heartbeat.pop().stop()  # type: ignore[attr-defined]


@task_prerun.connect
def _task_started(task_id: str = "", task: object = None, args: object = None,
                  kwargs: object = None, **_: object) -> None:
    from mailer.counters import mark_activity
    from mailer.logging import bind_context

    try:
        name = str(getattr(task, "name", ""))
        fields: dict[str, object] = {"task_id": task_id, "task": name}
        edition_id = (kwargs or {}).get("edition_id")  # type: ignore[attr-defined]
        if edition_id is None and name == tasks.SEND_BATCH and args:
            edition_id = args[0]  # type: ignore[index]
        if edition_id is not None:
            fields["edition_id"] = edition_id
        _log_tokens[task_id] = bind_context(**fields)
        mark_activity(_queue_of(task))
    except Exception:
        logging.getLogger(__name__).debug("task_prerun hook failed", exc_info=True)


@task_postrun.connect
def _task_finished(task_id: str = "", task: object = None, **_: object) -> None:
    from mailer.counters import flush, mark_activity
    from mailer.logging import reset_context

    try:
        flush()  # this task's SMTP figures, before the next one starts
        mark_activity(_queue_of(task))
        token = _log_tokens.pop(task_id, None)
        if token is not None:
            reset_context(token)  # type: ignore[arg-type]
    except Exception:
        logging.getLogger(__name__).debug("task_postrun hook failed", exc_info=True)


@task_failure.connect
def _task_failed(sender: object = None, **_: object) -> None:
    from mailer.counters import record_task

    record_task("failure", str(getattr(sender, "name", "unknown")))


@task_retry.connect
def _task_retried(sender: object = None, **_: object) -> None:
    from mailer.counters import record_task

    record_task("retry", str(getattr(sender, "name", "unknown")))


def _queue_of(task: object) -> str:
    info = getattr(getattr(task, "request", None), "delivery_info", None) or {}
    return str(info.get("routing_key") or tasks.DEFAULT)
