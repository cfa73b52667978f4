"""The counters worker processes keep in Redis: SMTP replies and latency, task failures and
retries, and when each queue last saw work. This is the writing side, below the domain
packages and the mail they send (the sender and ``mailer.emails.send.send_one`` count as
they send); :mod:`mailer.ops` reads it.

SMTP figures are kept per kind of message (``mailer.emails.kinds``): a newsletter's under
``mailer:metrics:smtp`` as they always were, every other kind's under
``mailer:metrics:smtp:<kind>``.

SMTP figures are added up in the process and written in one pipelined round trip at most
once a second (and at the end of every task), so a send of thousands of messages costs a
handful of Redis calls, not one per message. A process killed between two writes loses at
most a second of counts; the deliveries in the database are never affected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import redis

from mailer.redis import get_redis
from mailer.tasks import BULK

log = logging.getLogger(__name__)

SMTP_KEY = "mailer:metrics:smtp"
#: The kind whose figures are under SMTP_KEY itself (the newsletters').
BULK_KIND = "delivery"
TASKS_KEY = "mailer:metrics:tasks"
ACTIVITY_KEY = "mailer:ops:activity"

#: Upper bounds (seconds) of the SMTP latency histogram: one SMTP transaction, from MAIL
#: FROM to the reply after DATA (and the connection set-up when there is one).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FLUSH_EVERY = 1.0


def _bucket(seconds: float) -> str:
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


class _Buffer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fields: Counter[str] = Counter()
        self.latency_sum = 0.0
        self.last_flush = time.monotonic()

    def add(self, code: int | None, seconds: float) -> bool:
        with self.lock:
            self.fields[f"code:{code if code is not None else 'none'}"] += 1
            if code is not None and 200 <= code < 300:
                self.fields["sent"] += 1
            self.fields[f"bucket:{_bucket(seconds)}"] += 1
            self.fields["latency_count"] += 1
            self.latency_sum += seconds
            return time.monotonic() - self.last_flush >= FLUSH_EVERY

    def take(self) -> tuple[Counter[str], float]:
        with self.lock:
            fields, total = self.fields, self.latency_sum
            self.fields, self.latency_sum = Counter(), 0.0
            self.last_flush = time.monotonic()
            return fields, total


_buffers: dict[str, _Buffer] = {BULK_KIND: _Buffer()}
_buffers_lock = threading.Lock()


def smtp_key(kind: str = BULK_KIND) -> str:
    return SMTP_KEY if kind == BULK_KIND else f"{SMTP_KEY}:{kind}"


def _buffer_of(kind: str) -> _Buffer:
    buffer = _buffers.get(kind)
    if buffer is None:
        with _buffers_lock:
            buffer = _buffers.setdefault(kind, _Buffer())
    return buffer


def record_smtp(code: int | None, seconds: float, kind: str = BULK_KIND) -> None:
    """Count one SMTP transaction of a message of ``kind`` (a newsletter's, by default):
    its reply code (None when the connection failed) and how long it took. Never raises."""
    try:
        if _buffer_of(kind).add(code, seconds):
            flush()
    except Exception:  # metrics must never stop a send
        log.debug("could not record an SMTP reply", exc_info=True)


def flush() -> None:
    """Write what this process counted to Redis. Never raises; on failure the counts are
    kept for the next attempt."""
    taken = [(kind, buffer, *buffer.take()) for kind, buffer in list(_buffers.items())]
    taken = [t for t in taken if t[2]]
    if not taken:
        return
    try:
        pipe = get_redis().pipeline(transaction=False)
        for kind, _, fields, latency_sum in taken:
            for name, n in fields.items():
                pipe.hincrby(smtp_key(kind), name, n)
            pipe.hincrbyfloat(smtp_key(kind), "latency_sum", latency_sum)
            if kind == BULK_KIND:
                pipe.hset(ACTIVITY_KEY, BULK, time.time())
        pipe.execute()
    except (redis.RedisError, OSError) as exc:
        for _, buffer, fields, latency_sum in taken:
            with buffer.lock:  # try again at the next flush
                buffer.fields.update(fields)
                buffer.latency_sum += latency_sum
        log.debug("could not write SMTP metrics to Redis: %s", exc)


def record_task(event: str, task_name: str) -> None:
    """Count a task ``failure`` or ``retry``. Never raises."""
    try:
        get_redis().hincrby(TASKS_KEY, f"{event}:{task_name}", 1)
    except (redis.RedisError, OSError) as exc:
        log.debug("could not count a task %s: %s", event, exc)


def mark_activity(queue: str) -> None:
    """Note that a worker is busy with ``queue`` now (the "queue not draining" alert)."""
    try:
        get_redis().hset(ACTIVITY_KEY, queue, time.time())
    except (redis.RedisError, OSError) as exc:
        log.debug("could not note activity on %s: %s", queue, exc)


# --- reading -----------------------------------------------------------------------------------


def _decoded(raw: dict[Any, Any]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                          else v) for k, v in raw.items()}


def smtp_figures(client: redis.Redis | None = None, kind: str = BULK_KIND) -> dict[str, Any]:
    """{"codes": {"250": n, "none": n}, "sent": n, "buckets": {"0.005": n, …, "+Inf": n}
    (not cumulative), "count": n, "sum": seconds} of one kind of message (newsletters')."""
    raw = _decoded((client or get_redis()).hgetall(smtp_key(kind)))  # type: ignore[arg-type]
    codes = {k.split(":", 1)[1]: int(v) for k, v in raw.items() if k.startswith("code:")}
    buckets = {k.split(":", 1)[1]: int(v) for k, v in raw.items() if k.startswith("bucket:")}
    return {"codes": codes, "sent": int(raw.get("sent", 0)), "buckets": buckets,
            "count": int(raw.get("latency_count", 0)), "sum": float(raw.get("latency_sum", 0))}


def task_figures(client: redis.Redis | None = None) -> dict[str, dict[str, int]]:
    """{"failure": {task: n}, "retry": {task: n}}."""
    raw = _decoded((client or get_redis()).hgetall(TASKS_KEY))  # type: ignore[arg-type]
    out: dict[str, dict[str, int]] = {"failure": {}, "retry": {}}
    for key, value in raw.items():
        event, _, task = key.partition(":")
        out.setdefault(event, {})[task] = int(value)
    return out


def last_activity(client: redis.Redis | None = None) -> dict[str, float]:
    return activity_of((client or get_redis()).hgetall(ACTIVITY_KEY))  # type: ignore[arg-type]


def activity_of(raw: dict[Any, Any]) -> dict[str, float]:
    """Per queue, when a worker last touched it, from ``HGETALL`` of ``ACTIVITY_KEY`` (what
    :func:`last_activity` asks; ``mailer.ops.queues`` asks it in its own pipeline)."""
    return {k: float(v) for k, v in _decoded(raw).items()}


# --- the sending pipeline's hook -----------------------------------------------------------


class TimedTransport:
    """Wraps the process's SMTP transport: every ``send`` is timed and its reply code
    counted (:func:`record_smtp`, under ``kind``); results and failures pass through
    unchanged. A failure is counted when it is an SMTP one (it carries the ``code`` and
    ``stage`` of ``mailer.emails.transport.SMTPFailure``, which this layer, below the
    mail, does not import)."""

    def __init__(self, inner: Any, kind: str = BULK_KIND) -> None:
        self._inner = inner
        self._kind = kind

    def send(self, sender: str, recipient: str, payload: bytes, then: Any = None) -> Any:
        start = time.perf_counter()
        try:
            accepted = self._inner.send(sender, recipient, payload, then)
        except Exception as failure:
            if hasattr(failure, "stage") and hasattr(failure, "code"):
                record_smtp(failure.code, time.perf_counter() - start, self._kind)
            raise
        record_smtp(accepted.code, time.perf_counter() - start, self._kind)
        return accepted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def timed(transport: Any, kind: str = BULK_KIND) -> TimedTransport:
    return TimedTransport(transport, kind)
