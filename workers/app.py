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

from celery import Celery
from celery.schedules import crontab
from celery.signals import worker_process_init, worker_process_shutdown
from kombu import Queue

from mailer.config import get_settings
from mailer.logging import setup_logging

QUEUES = ("confirmations", "bulk", "default")


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("mailer", include=[
        "workers.confirmations", "workers.bulk", "workers.maintenance", "workers.bounces",
    ])
    visibility = int(max(settings.retry_max_seconds * 2, 3 * 3600))
    app.conf.update(
        broker_url=settings.redis_url,
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
        task_default_queue="default",
        task_queues=[Queue(name) for name in QUEUES],
        task_routes={
            "workers.confirmations.*": {"queue": "confirmations"},
            "workers.bulk.*": {"queue": "bulk"},
        },
        task_send_sent_event=True,
        worker_send_task_events=True,
        timezone=settings.timezone,
        enable_utc=True,
        beat_schedule=beat_schedule(),
    )
    return app


def beat_schedule() -> dict[str, dict[str, object]]:
    settings = get_settings()
    schedule: dict[str, dict[str, object]] = {
        "sweep-deliveries": {
            "task": "workers.maintenance.sweep",
            "schedule": settings.sweep_every_seconds,
        },
        "purge-pending-signups": {
            "task": "workers.maintenance.purge_pending_signups",
            "schedule": 3600.0,
        },
    }
    if settings.feed_urls:
        schedule["poll-feeds"] = {
            "task": "workers.maintenance.poll_feeds",
            "schedule": settings.feed_poll_minutes * 60.0,
        }
    minute, hour, day_of_month, month, day_of_week = settings.edition_schedule_cron.split()
    schedule["draft-next-edition"] = {
        "task": "workers.maintenance.draft_next_edition",
        "schedule": crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                            month_of_year=month, day_of_week=day_of_week),
    }
    # What the bounce server accepted but no worker processed (a task lost with Redis).
    schedule["process-bounce-spool"] = {
        "task": "workers.bounces.process_spool",
        "schedule": 60.0,
    }
    if settings.imap_url or settings.pop3_url:
        schedule["poll-bounce-mailbox"] = {
            "task": "workers.bounces.poll_mailbox",
            "schedule": settings.bounce_poll_minutes * 60.0,
        }
    return schedule


app = make_app()


@worker_process_init.connect
def _fresh_process(**_: object) -> None:
    # A forked child must not share the parent's database or SMTP sockets.
    from mailer.db import dispose_engines
    from mailer.redis import reset_redis

    setup_logging()
    dispose_engines()
    reset_redis()


@worker_process_shutdown.connect
def _close_smtp(**_: object) -> None:
    from mailer.emails.transport import close_process_transport

    close_process_transport()


def reset_broker() -> None:
    """Point the app at the Redis the settings name now (tests switch between servers)."""
    app.conf.broker_url = get_settings().redis_url
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
