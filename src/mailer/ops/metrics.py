"""``/metrics`` in Prometheus's text format, gathered at scrape time.

From Redis: queue depths, workers alive, SMTP reply codes and latency (the newsletters',
and every kind of message's: ``mailer_smtp_replies_by_kind``), messages sent,
task failures and retries, the bounce alert counters. From the database: deliveries by
state, each edition under way, bounces by class, complaint rates, subscribers. Alerts as
``mailer_alert{alert="…"}`` 0/1. A part that cannot be read is left out and its
``mailer_*_up`` gauge says 0, so a scrape never fails as a whole.

The workers' side of the counters is :mod:`mailer.counters`; :func:`record_smtp` is
re-exported here for the sending pipeline.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import counters
from mailer.bounces.actions import alert_counts
from mailer.bounces.models import UNVERIFIED_REASONS, Bounce, Trust
from mailer.config import Settings
from mailer.counters import LATENCY_BUCKETS, record_smtp, timed
from mailer.db import transaction
from mailer.deliveries.models import Delivery, DeliveryState
from mailer.emails.kinds import TYPES, MessageKind
from mailer.lists.models import MailingList, Subscription
from mailer.ops import alerts as alerts_
from mailer.ops import status
from mailer.subscribers.models import Suppression

__all__ = ["CONTENT_TYPE", "figures", "record_smtp", "render", "timed"]

#: The classic text format (0.0.4): every Prometheus version reads it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

log = logging.getLogger(__name__)


class MailerCollector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        try:  # the bulk queue's work includes deliveries waiting in the database
            with transaction() as session:
                redis_part = status.redis_state(self.settings, session)
        except Exception as exc:  # the database is away: Redis alone
            log.warning("metrics: waiting deliveries not counted: %s", exc)
            redis_part = status.redis_state(self.settings)
        yield from _redis_metrics(redis_part)
        yield from _database_metrics(redis_part, self.settings)


def render(settings: Settings) -> bytes:
    """One scrape: the figures of Redis and the database, the alerts ``settings`` define."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MailerCollector(settings))  # type: ignore[arg-type]
    return generate_latest(registry)


def figures(settings: Settings) -> dict[str, dict[str, Any]]:
    """The same scrape as data (the API's ``/stats``): per metric family its type, help
    and samples (a counter's ``…_total``, a histogram's ``…_bucket``/``_sum``/``_count``),
    each with its labels and value; a value that is not finite is None (JSON has no NaN)."""
    out: dict[str, dict[str, Any]] = {}
    for family in MailerCollector(settings).collect():
        out[family.name] = {
            "type": family.type, "help": family.documentation,
            "samples": [{"name": sample.name, "labels": dict(sample.labels),
                         "value": float(sample.value) if math.isfinite(sample.value) else None}
                        for sample in family.samples]}
    return out


def _gauge(name: str, doc: str, value: float | None = None,
           labels: list[str] | None = None) -> GaugeMetricFamily:
    if labels is None:
        return GaugeMetricFamily(name, doc, value=value or 0)
    return GaugeMetricFamily(name, doc, labels=labels)


# --- Redis ---------------------------------------------------------------------------------------


def _smtp_by_kind(figures: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """The SMTP figures of every kind of message (``mailer.emails.kinds``): newsletters,
    confirmation mails, review mails, test copies, each counted as it is sent."""
    replies = CounterMetricFamily("mailer_smtp_replies_by_kind", "SMTP transactions by "
                                  "kind of message and final reply code (none: no reply)",
                                  labels=["kind", "code"])
    latency = HistogramMetricFamily("mailer_smtp_latency_by_kind_seconds", "Duration of one "
                                    "SMTP transaction, by kind of message", labels=["kind"])
    for kind, smtp in figures.items():
        for code, n in sorted(smtp["codes"].items()):
            replies.add_metric([kind, code], n)
        cumulative, buckets = 0, []
        for bound in (*(repr(b) for b in LATENCY_BUCKETS), "+Inf"):
            cumulative += smtp["buckets"].get(bound, 0)
            buckets.append((bound, cumulative))
        latency.add_metric([kind], buckets, smtp["sum"])
    yield replies
    yield latency


def _redis_metrics(redis_part: status.RedisState) -> Iterator[Metric]:
    try:
        error, queues, unacked, workers = redis_part
        if error is not None or queues is None or workers is None:
            raise redis.ConnectionError(error or "unreachable")
        smtp = counters.smtp_figures()
        by_kind = {kind.value: smtp if kind is MessageKind.delivery else
                   counters.smtp_figures(kind=kind.value) for kind in TYPES}
        tasks = counters.task_figures()
        bounce_alerts = alert_counts()
    except (redis.RedisError, OSError) as exc:
        log.warning("metrics: Redis not readable: %s", exc)
        yield _gauge("mailer_redis_up", "1 when Redis (the broker) answered this scrape", 0)
        return
    yield _gauge("mailer_redis_up", "1 when Redis (the broker) answered this scrape", 1)

    depth = _gauge("mailer_queue_depth", "Tasks waiting in each Celery queue", labels=["queue"])
    for queue in queues:
        depth.add_metric([queue.name], queue.depth)
    yield depth
    in_database = _gauge("mailer_queue_waiting_deliveries", "Deliveries waiting in the database "
                         "for a queue's workers (bulk: queued, or deferred and due)",
                         labels=["queue"])
    for queue in queues:
        if queue.deliveries_waiting is not None:
            in_database.add_metric([queue.name], queue.deliveries_waiting)
    yield in_database
    yield _gauge("mailer_queue_unacked",
                 "Tasks held by workers and not acknowledged yet (running or waiting for a "
                 "retry)", unacked)
    yield _gauge("mailer_workers_alive", "Celery workers with a recent heartbeat", len(workers))

    yield CounterMetricFamily("mailer_messages_sent", "Newsletter messages an SMTP server "
                              "accepted", value=smtp["sent"])
    replies = CounterMetricFamily("mailer_smtp_replies", "SMTP transactions of newsletter "
                                  "sends by the final reply code (none: no reply, the "
                                  "connection failed)", labels=["code"])
    for code, n in sorted(smtp["codes"].items()):
        replies.add_metric([code], n)
    yield replies
    cumulative, buckets = 0, []
    for bound in (*(repr(b) for b in LATENCY_BUCKETS), "+Inf"):
        cumulative += smtp["buckets"].get(bound, 0)
        buckets.append((bound, cumulative))
    yield HistogramMetricFamily("mailer_smtp_latency_seconds",
                                "Duration of one SMTP transaction of a newsletter send",
                                buckets=buckets, sum_value=smtp["sum"])
    yield from _smtp_by_kind(by_kind)

    for event, name, doc in (
            ("failure", "mailer_task_failures", "Celery tasks that raised an exception"),
            ("retry", "mailer_task_retries", "Celery tasks that asked to be retried")):
        family = CounterMetricFamily(name, doc, labels=["task"])
        for task, n in sorted(tasks.get(event, {}).items()):
            family.add_metric([task], n)
        yield family
    yield CounterMetricFamily("mailer_policy_rejections",
                              "Policy rejections of our mail (block lists, DMARC, filters)",
                              value=bounce_alerts.get("policy_rejections", 0))
    yield CounterMetricFamily("mailer_complaints", "Complaints (readers who marked a "
                              "newsletter as spam)", value=bounce_alerts.get("complaints", 0))


# --- the database -------------------------------------------------------------------------------


def _database_metrics(redis_part: status.RedisState, settings: Settings) -> Iterator[Metric]:
    try:
        with transaction() as session:
            families = list(_from_database(session, redis_part, settings))
    except Exception as exc:  # any driver error: report the database as down
        log.warning("metrics: database not readable: %s", exc)
        yield _gauge("mailer_database_up", "1 when the database answered this scrape", 0)
        return
    yield _gauge("mailer_database_up", "1 when the database answered this scrape", 1)
    yield from families


def _from_database(session: Session, redis_part: status.RedisState,
                   settings: Settings) -> Iterator[Metric]:
    snapshot = status.collect(session, settings, redis_part)

    by_state = dict(session.execute(
        select(Delivery.state, func.count()).group_by(Delivery.state)).all())
    deliveries = _gauge("mailer_deliveries", "Deliveries (one per edition and reader) by "
                        "state, all editions", labels=["state"])
    for delivery_state in DeliveryState:
        deliveries.add_metric([delivery_state.value], by_state.get(delivery_state.value, 0))
    yield deliveries

    per_edition = _gauge("mailer_edition_deliveries", "Deliveries of each edition sending or "
                         "paused, by state", labels=["edition", "state"])
    progress = _gauge("mailer_edition_progress_ratio", "Share of an edition's deliveries that "
                      "are final (0–1)", labels=["edition"])
    rate = _gauge("mailer_edition_send_rate", "Messages per second an edition is being sent "
                  "at (the last 10 seconds)", labels=["edition"])
    for edition in snapshot.editions:
        if edition.progress is None:
            continue
        label = str(edition.id)
        for state, n in sorted(edition.progress.counts.items()):
            per_edition.add_metric([label, state], n)
        progress.add_metric([label], edition.progress.percent / 100)
        rate.add_metric([label], edition.progress.rate_per_second)
    yield per_edition
    yield progress
    yield rate
    yield _gauge("mailer_send_rate", "Messages per second across every edition being sent",
                 sum(e.progress.rate_per_second for e in snapshot.editions if e.progress))

    bounces = CounterMetricFamily("mailer_bounces", "Bounces and complaints received, by "
                                  "class", labels=["class"])
    for klass, n in sorted(session.execute(
            select(Bounce.bounce_class, func.count()).group_by(Bounce.bounce_class))):
        bounces.add_metric([klass], n)
    yield bounces
    yield from _unverified(session)

    yield from _complaint_rates(snapshot.rates)

    subscribers = _gauge("mailer_subscribers", "Subscriptions by status, all lists",
                         labels=["status"])
    on_lists = _gauge("mailer_list_subscriptions", "Subscriptions by list and status",
                      labels=["list", "status"])
    totals: dict[str, int] = {}
    for slug, subscription_status, n in sorted(session.execute(
            select(MailingList.slug, Subscription.status, func.count())
            .join(MailingList, MailingList.id == Subscription.list_id)
            .group_by(MailingList.slug, Subscription.status))):
        on_lists.add_metric([slug, subscription_status], n)
        totals[subscription_status] = totals.get(subscription_status, 0) + n
    for subscription_status, n in sorted(totals.items()):
        subscribers.add_metric([subscription_status], n)
    yield subscribers
    yield on_lists
    suppressed = _gauge("mailer_suppressions", "Suppressed addresses by reason",
                        labels=["reason"])
    for reason, n in sorted(session.execute(
            select(Suppression.reason, func.count()).group_by(Suppression.reason))):
        suppressed.add_metric([reason], n)
    yield suppressed

    alert = _gauge("mailer_alert", "1 while the alert holds (see the admin's ops page for "
                   "the reason)", labels=["alert"])
    holding = {a.name for a in snapshot.alerts}
    for name in alerts_.NAMES:
        alert.add_metric([name], 1 if name in holding else 0)
    yield alert


def _unverified(session: Session) -> Iterator[Metric]:
    """Bounce mails nothing we signed tied to a message we sent: kept, acted on nobody."""
    counted = (Trust.unverified, Trust.confirmed)
    total = CounterMetricFamily(
        "mailer_bounces_unverified", "Bounces and complaints by mail that no valid VERP "
        "token or signed Message-ID tied to a message we sent (kept as evidence, acted on "
        "nobody unless staff confirmed them), by why", labels=["reason"])
    found = dict(session.execute(
        select(Bounce.unverified_reason, func.count()).where(Bounce.trust.in_(counted))
        .group_by(Bounce.unverified_reason)).all())
    for reason in sorted({*UNVERIFIED_REASONS, *found}):
        total.add_metric([reason], found.get(reason, 0))
    yield total
    yield _gauge("mailer_bounces_unverified_pending", "Unverified bounces no staff member "
                 "has confirmed (they act on nobody)", session.scalar(
                     select(func.count()).select_from(Bounce)
                     .where(Bounce.trust == Trust.unverified)) or 0)


def _complaint_rates(watched: list[dict[str, Any]]) -> Iterator[Metric]:
    per_edition = _gauge("mailer_edition_complaint_rate", "Complaints over delivered messages "
                         "of each edition under way or sent in the last 30 days (0–1)",
                         labels=["edition"])
    complaints = accepted = 0
    for rates in watched:
        per_edition.add_metric([str(rates["edition_id"])], rates["complaint_rate"])
        complaints += rates["complaints"]
        accepted += rates["accepted"]
    yield per_edition
    yield _gauge("mailer_complaint_rate", "Complaints over delivered messages of every edition "
                 "under way or sent in the last 30 days (0–1)",
                 complaints / accepted if accepted else 0.0)
