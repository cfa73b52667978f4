"""The alerts an operator needs, worked out from the database and Redis when asked.

- ``circuit_breaker``: an edition was paused by the sending circuit breaker;
- ``policy_rejections``: a server refused our mail for policy reasons (block list, DMARC,
  spam filter) in the last ``alert_window_hours``: our problem, not the reader's;
- ``complaint_rate``: an edition's complaint rate reached 0.1 % (critical at 0.3 %);
- ``queue_not_draining``: a queue has held work for ``queue_stall_seconds`` and no worker
  touched it meanwhile;
- ``no_worker``: no Celery worker has sent a heartbeat lately;
- ``redis_unreachable``: the broker itself is away (queues and workers cannot be seen);
- ``webhook_disabled``: an outgoing webhook endpoint failed for ``webhook_retry_hours``
  and was disabled (mailer.webhooks): until staff enable it, it hears of nothing.

The same list feeds ``/metrics`` (``mailer_alert{alert=…}``), the admin's banner and
``mailer status``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailer.bounces.models import Bounce, BounceClass
from mailer.bounces.rates import class_counts_of, edition_rates
from mailer.config import SendingSettings, Settings
from mailer.db import utcnow
from mailer.delivery.queries import state_counts_of
from mailer.editions.models import Edition, EditionState
from mailer.ops.queues import QueueState
from mailer.ops.workers import WorkerInfo
from mailer.webhooks.models import WebhookEndpoint

NAMES = ("circuit_breaker", "policy_rejections", "complaint_rate", "queue_not_draining",
         "no_worker", "redis_unreachable", "webhook_disabled")
BREAKER_PREFIX = "circuit breaker:"
#: Sent editions whose complaint rate is still watched (complaints come back for weeks).
COMPLAINT_WATCH_DAYS = 30

_PAUSED_BY_BREAKER = (Edition.state == EditionState.paused,
                      Edition.state_reason.startswith(BREAKER_PREFIX))
_DISABLED_ENDPOINT = (WebhookEndpoint.enabled.is_(False), WebhookEndpoint.disabled_at.is_not(None))


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str  # critical or warning
    message: str
    edition_id: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def evaluate(session: Session, settings: Settings, *, queues: list[QueueState] | None,
             workers: list[WorkerInfo] | None,
             rates: list[dict[str, Any]] | None = None) -> list[Alert]:
    """Every alert that holds now, by ``settings.ops`` (and the complaint levels of
    ``settings.sending``). ``queues``/``workers`` None: Redis could not be read.
    ``rates``: :func:`watched_rates`, when the caller has them already."""
    if rates is None:
        rates = watched_rates(session, settings.sending)
    hours = settings.ops.alert_window_hours
    look = _first_look(session, hours)
    alerts = [*(_breaker(session) if look.breakers else []),
              *_policy(session, hours, look.policy_count, look.policy_latest),
              *_complaints(rates, settings.sending.complaint_alert_rate,
                           settings.sending.complaint_stop_rate),
              *(_webhooks(session) if look.webhooks_disabled else [])]
    if queues is None or workers is None:
        alerts.append(Alert("redis_unreachable", "critical",
                            "Redis cannot be reached: nothing can be queued or sent."))
        return alerts
    stall = settings.ops.queue_stall_seconds
    for queue in queues:
        if queue.stalled:
            waiting = (f" and {queue.deliveries_waiting:,} deliveries wait in the database"
                       if queue.deliveries_waiting else "")
            alerts.append(Alert(
                "queue_not_draining", "critical",
                f"The {queue.name} queue has held {queue.depth:,} task(s){waiting} for over "
                f"{_duration(stall)} and no worker took any."))
    if not workers:
        alerts.append(Alert("no_worker", "critical",
                            "No Celery worker is running: nothing will be sent."))
    return alerts


@dataclass(frozen=True)
class _Look:
    breakers: int
    policy_count: int
    policy_latest: int | None
    webhooks_disabled: int


def _first_look(session: Session, hours: int) -> _Look:
    """Whether the alerts read from rows have anything to say, in one statement (each is
    an indexed count that is nearly always 0): editions the breaker paused, policy
    refusals in the window and the latest of them, disabled webhook endpoints. Only an
    alert that holds reads its rows. Every admin page's banner asks, so one round trip
    instead of three."""
    since = utcnow() - dt.timedelta(hours=hours)
    policy = (Bounce.bounce_class == BounceClass.policy, Bounce.edition_id.is_not(None),
              Bounce.received_at >= since)
    row = session.execute(select(
        select(func.count()).select_from(Edition).where(*_PAUSED_BY_BREAKER)
        .scalar_subquery(),
        select(func.count()).select_from(Bounce).where(*policy).scalar_subquery(),
        select(func.max(Bounce.id)).where(*policy).scalar_subquery(),
        select(func.count()).select_from(WebhookEndpoint).where(*_DISABLED_ENDPOINT)
        .scalar_subquery(),
    )).one()
    return _Look(int(row[0] or 0), int(row[1] or 0), row[2], int(row[3] or 0))


def _breaker(session: Session) -> list[Alert]:
    paused = session.execute(
        select(Edition.id, Edition.subject, Edition.state_reason)
        .where(*_PAUSED_BY_BREAKER).order_by(Edition.id)
    ).all()
    return [Alert("circuit_breaker", "critical",
                  f"Edition {eid} (“{subject}”) was paused by the {reason}. Find the cause "
                  "in its bounces before resuming it.", eid)
            for eid, subject, reason in paused]


def _policy(session: Session, hours: int, count: int, latest: int | None) -> list[Alert]:
    """``count`` policy refusals in the last ``hours``, ``latest`` the newest
    (:func:`_first_look`)."""
    if not count:
        return []
    last = session.get(Bounce, latest)
    said = f" The latest: {last.status_code} {last.diagnostic[:160]}".rstrip() if last else ""
    return [Alert("policy_rejections", "warning",
                  f"{count:,} message(s) refused for policy reasons in the last {hours} h "
                  f"(block list, DMARC or content filter).{said}",
                  last.edition_id if last else None)]


def watched_rates(session: Session, sending: SendingSettings) -> list[dict[str, Any]]:
    """Bounce and complaint rates (``edition_rates``) of every edition under way or sent in
    the last 30 days: complaints keep coming back for weeks after a send.

    A sent edition's deliveries are not counted again: none changes state after the send
    (a bounce that comes back later is a row of its own), and the end of the send kept
    their counts (``edition.stats["deliveries"]``, ``delivery.service.finish_if_done``).
    Counting 100,000 rows per edition took every admin page's banner 30–40 ms each. The
    others' deliveries, and every watched edition's bounces, are counted in one grouped
    query each, not one per edition."""
    since = utcnow() - dt.timedelta(days=COMPLAINT_WATCH_DAYS)
    watched = session.execute(
        select(Edition.id, Edition.state, Edition.stats).where(or_(
            Edition.state.in_([EditionState.sending, EditionState.paused]),
            (Edition.state == EditionState.sent) & (Edition.finished_at >= since),
        )).order_by(Edition.id)
    ).all()
    if not watched:
        return []
    kept = {edition_id: _final_counts(state, stats) for edition_id, state, stats in watched}
    uncounted = [edition_id for edition_id, states in kept.items() if states is None]
    counted = state_counts_of(session, uncounted) if uncounted else {}
    per_class = class_counts_of(session, list(kept))
    return [edition_rates(session, edition_id, sending,
                          states=states if states is not None else counted.get(edition_id, {}),
                          per_class=per_class.get(edition_id, {}))
            for edition_id, states in kept.items()]


def _final_counts(state: str, stats: dict[str, Any] | None) -> dict[str, int] | None:
    """The deliveries by state that a sent edition's finish kept (None: count them)."""
    kept = (stats or {}).get("deliveries") if state == EditionState.sent else None
    return {str(k): int(n) for k, n in kept.items()} if isinstance(kept, dict) else None


def _complaints(watched: list[dict[str, Any]], alert_rate: float,
                stop_rate: float) -> list[Alert]:
    alerts = []
    for rates in watched:
        edition_id = rates["edition_id"]
        if not rates["complaint_alert"]:
            continue
        stop = rates["complaint_stop"]
        alerts.append(Alert(
            "complaint_rate", "critical" if stop else "warning",
            f"Edition {edition_id}: {rates['complaints']:,} complaint(s) for "
            f"{rates['accepted']:,} delivered, {100 * rates['complaint_rate']:.2f} % "
            f"(alert at {100 * alert_rate:.1f} %"
            + (f", stop at {100 * stop_rate:.1f} %)" if stop else ")"),
            edition_id))
    return alerts


def _webhooks(session: Session) -> list[Alert]:
    disabled = session.scalars(
        select(WebhookEndpoint).where(*_DISABLED_ENDPOINT).order_by(WebhookEndpoint.id)).all()
    return [Alert("webhook_disabled", "warning",
                  f"Webhook endpoint {e.id} ({e.url}) is disabled: {e.disabled_reason} "
                  "Enable it again on the Webhooks page once the receiver answers.")
            for e in disabled]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 120 else f"{seconds:g} seconds"
