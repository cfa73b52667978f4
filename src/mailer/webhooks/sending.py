"""Delivering webhook events: one signed attempt at a time, retried with back-off for a
day, and a sweep that queues again whatever is due and was lost on the way.

An attempt (:func:`deliver`) takes three steps, so that no database lock is held while a
receiver takes its time: claim the delivery (a conditional UPDATE; a second copy of the
task, or a second worker, finds it claimed and does nothing), post it (signed per the
Standard Webhooks specification, to the address checked for it), then record the
attempt in the delivery log and what follows: delivered, or the next attempt after the
back-off (``webhook_retry_base_seconds`` doubling to ``webhook_retry_max_seconds``), or,
past ``webhook_retry_hours``, given up. A worker killed between the claim and the record
leaves a claim that runs out; the sweep queues the delivery again, so the event goes out
(at least once: the receiver may see it twice, with the same ``webhook-id``).

An endpoint that has answered nothing but failures for ``webhook_retry_hours`` is disabled
(the operators' alert ``webhook_disabled`` says so) until staff enable it again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

import httpx
from sqlalchemy import CursorResult, func, insert, or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from mailer import tasks
from mailer.audit import record
from mailer.backoff import Backoff
from mailer.config import WebhookSettings
from mailer.db import transaction, utcnow
from mailer.webhooks.endpoints import EndpointError, TargetRefused, check_target
from mailer.webhooks.events import body_of
from mailer.webhooks.models import (
    AttemptOutcome,
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)

log = logging.getLogger(__name__)

USER_AGENT = "mailer-webhooks/1.0"
#: What is kept of a receiver's answer or an error, in the log.
ERROR_LIMIT = 500
#: Deliveries the sweep queues in one round (the rest in the next).
SWEEP_LIMIT = 1000
#: A claim lasts the attempt's timeout and this much more.
CLAIM_MARGIN_SECONDS = 5.0
#: The actor of what the service does by itself (disabling an endpoint).
ACTOR = "webhooks"


def backoff(settings: WebhookSettings) -> Backoff:
    return Backoff(base=settings.webhook_retry_base_seconds,
                   cap=settings.webhook_retry_max_seconds)


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    token: str
    endpoint_id: int
    url: str
    secret: str
    message_id: str
    body: str


@dataclass(frozen=True)
class Attempt:
    outcome: AttemptOutcome
    status_code: int | None
    latency_ms: int
    error: str = ""


def deliver(delivery_id: int, *, settings: WebhookSettings) -> str:
    """Attempt delivery ``delivery_id`` if it is due and nobody else is attempting it;
    returns what happened (safe to run twice)."""
    claimed = _claim(delivery_id, settings)
    if claimed is None:
        return "not due"
    attempt = _post(claimed, settings)
    _record(claimed, attempt, settings)
    return str(attempt.outcome)


def _claim(delivery_id: int, settings: WebhookSettings) -> Claimed | None:
    with transaction() as session:
        now = utcnow()
        token = secrets.token_hex(8)
        lease = dt.timedelta(seconds=settings.webhook_timeout_seconds + CLAIM_MARGIN_SECONDS)
        claimed = _rows(session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id,
                   WebhookDelivery.state == DeliveryState.pending,
                   # A countdown may run a moment early; a beat sweep's copy, a little late.
                   WebhookDelivery.next_attempt_at <= now + dt.timedelta(seconds=1),
                   or_(WebhookDelivery.claimed_until.is_(None),
                       WebhookDelivery.claimed_until < now))
            .values(claim=token, claimed_until=now + lease)
        ))
        if not claimed:
            return None
        event, endpoint_id, url, secret, enabled = session.execute(  # one read, no ORM load
            select(WebhookMessage, WebhookEndpoint.id, WebhookEndpoint.url,
                   WebhookEndpoint.secret, WebhookEndpoint.enabled)
            .join(WebhookDelivery, WebhookDelivery.event_id == WebhookMessage.id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id)).one()
        if not enabled:  # it waits for an enable
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                            .values(claim=None, claimed_until=None))
            return None
        return Claimed(delivery_id, token, endpoint_id, url, secret, event.message_id,
                       json.dumps(body_of(event), separators=(",", ":"), ensure_ascii=False))


def signed_headers(secret: str, message_id: str, body: str,
                   at: dt.datetime | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` at ``at`` (now)."""
    at = at or utcnow()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
    }


_client: list[httpx.Client] = []


def _http() -> httpx.Client:
    """This process's client (keeps connections to the receivers open between events)."""
    if not _client:
        # trust_env off: a proxy from the environment would resolve the name itself.
        _client.append(httpx.Client(follow_redirects=False, trust_env=False))
    return _client[0]


def close_client() -> None:
    while _client:
        _client.pop().close()


def _post(claimed: Claimed, settings: WebhookSettings) -> Attempt:
    timeout = settings.webhook_timeout_seconds
    try:
        target = check_target(claimed.url, settings.webhook_allowed_hosts)
        url = httpx.URL(claimed.url)
    except (TargetRefused, httpx.InvalidURL) as exc:
        return Attempt(AttemptOutcome.refused, None, 0, str(exc)[:ERROR_LIMIT])
    # The latency is the receiver's: from the request to its answer, the lookup left out.
    started = time.monotonic()
    elapsed = lambda: int((time.monotonic() - started) * 1000)  # noqa: E731
    client = _http()
    headers = {"Host": url.netloc.decode("ascii").rpartition("@")[2],
               "Content-Type": "application/json", "User-Agent": USER_AGENT,
               **signed_headers(claimed.secret, claimed.message_id, claimed.body)}
    try:
        request = client.build_request(
            "POST", url.copy_with(host=str(target.address)), headers=headers,
            content=claimed.body.encode(), timeout=timeout,
            extensions={"sni_hostname": target.host})
        answer = client.send(request, stream=True)
        try:
            said = _excerpt(answer, started + timeout)
        finally:
            answer.close()
    except httpx.TimeoutException as exc:
        return Attempt(AttemptOutcome.timeout, None, elapsed(),
                       f"no whole answer within {timeout:g} s ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return Attempt(AttemptOutcome.error, None, elapsed(),
                       f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT])
    if 200 <= answer.status_code < 300:
        return Attempt(AttemptOutcome.delivered, answer.status_code, elapsed())
    return Attempt(AttemptOutcome.failed, answer.status_code, elapsed(),
                   f"HTTP {answer.status_code}: {said}"[:ERROR_LIMIT])


def _excerpt(answer: httpx.Response, deadline: float) -> str:
    """The start of the answer's body, read within the attempt's deadline."""
    body = bytearray()
    for chunk in answer.iter_bytes():
        body += chunk
        if len(body) >= ERROR_LIMIT:
            break
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the answer took longer than the timeout")
    return body[:ERROR_LIMIT].decode("utf-8", "replace").strip()


def _record(claimed: Claimed, attempt: Attempt, settings: WebhookSettings) -> None:
    with transaction() as session:
        now = utcnow()
        if attempt.outcome == AttemptOutcome.delivered and _record_delivered(
                session, claimed, attempt, now):
            return
        delivery = session.get(WebhookDelivery, claimed.delivery_id, with_for_update=True)
        if delivery is None:
            return  # its endpoint was removed meanwhile
        session.add(WebhookAttempt(delivery_id=claimed.delivery_id,
                                   endpoint_id=claimed.endpoint_id, at=now,
                                   outcome=attempt.outcome, status_code=attempt.status_code,
                                   latency_ms=attempt.latency_ms, error=attempt.error))
        if delivery.claim != claimed.token:
            return  # our claim ran out and another worker took it: its attempt decides
        endpoint = session.get(WebhookEndpoint, claimed.endpoint_id)
        assert endpoint is not None
        delivery.claim, delivery.claimed_until = None, None
        delivery.last_status_code = attempt.status_code
        delivery.last_error = attempt.error
        delivery.attempts += 1
        if attempt.outcome == AttemptOutcome.delivered:
            delivery.state = DeliveryState.delivered
            delivery.delivered_at = now
            endpoint.failing_since = None
            endpoint.last_success_at = now
            return
        window = dt.timedelta(hours=settings.webhook_retry_hours)
        delay = backoff(settings).seconds(delivery.attempts - 1)
        retry_at = now + dt.timedelta(seconds=delay)
        if retry_at > delivery.retry_from + window:
            delivery.state = DeliveryState.failed
        else:
            delivery.next_attempt_at = retry_at
            delivery.queued_at = retry_at
            tasks.publish(tasks.DELIVER_WEBHOOK, delivery.id, session=session, countdown=delay)
        _note_failure(session, endpoint, attempt, now, window)


def _record_delivered(session: Session, claimed: Claimed, attempt: Attempt,
                      now: dt.datetime) -> bool:
    """The common case in three statements: the delivery (if the claim is still ours), the
    log, the endpoint's last success. False if the claim is not ours (the slow path)."""
    done = _rows(session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.delivery_id,
               WebhookDelivery.claim == claimed.token)
        .values(state=DeliveryState.delivered, delivered_at=now, claim=None,
                claimed_until=None, last_status_code=attempt.status_code, last_error="",
                attempts=WebhookDelivery.attempts + 1)))
    if not done:
        return False
    session.execute(insert(WebhookAttempt).values(
        delivery_id=claimed.delivery_id, endpoint_id=claimed.endpoint_id, at=now,
        outcome=attempt.outcome, status_code=attempt.status_code,
        latency_ms=attempt.latency_ms, error=""))
    session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == claimed.endpoint_id)
                    .values(failing_since=None, last_success_at=now))
    return True


def _note_failure(session: Session, endpoint: WebhookEndpoint, attempt: Attempt,
                  now: dt.datetime, window: dt.timedelta) -> None:
    if endpoint.failing_since is None:
        endpoint.failing_since = now
        return
    if endpoint.enabled and endpoint.failing_since <= now - window:
        endpoint.enabled = False
        endpoint.disabled_at = now
        hours = window.total_seconds() / 3600
        endpoint.disabled_reason = (
            f"disabled after {hours:g} h of failures; the last: "
            f"{attempt.error or attempt.outcome}")[:1000]
        record(session, actor=ACTOR, action="webhook.disable",
               target=f"webhook:{endpoint.id}", detail={"url": endpoint.url})
        log.warning("webhook endpoint %s (%s) disabled after %g h of failures",
                    endpoint.id, endpoint.url, hours)


def sweep(session: Session, *, settings: WebhookSettings) -> int:
    """Queue the deliveries that are due and that no task is on its way for (a task lost
    with Redis, a worker killed during an attempt, an endpoint enabled again). Returns how
    many were queued; they are published once ``session`` commits."""
    now = utcnow()
    stale = now - dt.timedelta(seconds=settings.webhook_requeue_after_seconds)
    due = list(session.scalars(
        select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.state == DeliveryState.pending,
               WebhookEndpoint.enabled.is_(True),
               WebhookDelivery.next_attempt_at <= now,
               or_(WebhookDelivery.queued_at.is_(None), WebhookDelivery.queued_at < stale),
               or_(WebhookDelivery.claimed_until.is_(None),
                   WebhookDelivery.claimed_until < now))
        .order_by(WebhookDelivery.id).limit(SWEEP_LIMIT)))
    if due:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(due))
                        .values(queued_at=now))
        tasks.publish_many(tasks.DELIVER_WEBHOOK, [(i,) for i in due], session=session)
    return len(due)


def redeliver(session: Session, delivery_id: int, *, by: str) -> WebhookDelivery:
    """Send a delivery again now (staff's button), whatever its state, and retry it for
    another ``webhook_retry_hours`` if it fails."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise EndpointError(f"There is no webhook delivery {delivery_id}.")
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    if endpoint is None or not endpoint.enabled:
        raise EndpointError("Its endpoint is disabled: enable it first.")
    now = utcnow()
    delivery.state = DeliveryState.pending
    delivery.next_attempt_at = delivery.retry_from = delivery.queued_at = now
    delivery.claim, delivery.claimed_until = None, None
    record(session, actor=by, action="webhook.redeliver", target=f"webhook:{endpoint.id}",
           detail={"delivery": delivery.id, "event": delivery.event.message_id})
    tasks.publish(tasks.DELIVER_WEBHOOK, delivery.id, session=session)
    return delivery


# --- the delivery log --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedAttempt:
    at: dt.datetime
    delivery_id: int
    kind: str
    message_id: str
    outcome: str
    status_code: int | None
    latency_ms: int
    error: str


def attempts_of(session: Session, endpoint_id: int, *, limit: int = 50) -> list[LoggedAttempt]:
    """The newest attempts at an endpoint first: status, reply code, latency."""
    rows = session.execute(
        select(WebhookAttempt, WebhookMessage.kind, WebhookMessage.message_id)
        .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
        .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.event_id)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
        .order_by(WebhookAttempt.id.desc()).limit(limit)).all()
    return [LoggedAttempt(a.at, a.delivery_id, kind, message_id, a.outcome, a.status_code,
                          a.latency_ms, a.error) for a, kind, message_id in rows]


def deliveries_of(session: Session, endpoint_id: int, *,
                  limit: int = 50) -> list[WebhookDelivery]:
    """The newest deliveries to an endpoint first, with their events."""
    return list(session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        .order_by(WebhookDelivery.id.desc()).limit(limit)))


def counts_by_endpoint(session: Session) -> dict[int, dict[str, int]]:
    """Each endpoint's deliveries by state."""
    found: dict[int, dict[str, int]] = {}
    for endpoint_id, state, n in session.execute(
            select(WebhookDelivery.endpoint_id, WebhookDelivery.state, func.count())
            .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.state)):
        found.setdefault(endpoint_id, {})[str(state)] = n
    return found


def _rows(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount
