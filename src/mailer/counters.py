"""The counters worker processes keep in Redis: SMTP replies and latency, task failures and
retries, and when each queue last saw work. This is the writing side, below the domain
packages (the sender counts as it sends); :mod:`mailer.ops` reads it.

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


_buffer = _Buffer()


def record_smtp(code: int | None, seconds: float) -> None:
    """Count one SMTP transaction of a newsletter send: its reply code (None when the
    connection failed) and how long it took. Never raises."""
    try:
        if _buffer.add(code, seconds):
            flush()
    except Exception:  # metrics must never stop a send
        log.debug("could not record an SMTP reply", exc_info=True)


def flush() -> None:
    """Write what this process counted to Redis. Never raises; on failure the counts are
    kept for the next attempt."""
    fields, latency_sum = _buffer.take()
    if not fields:
        return
    try:
        pipe = get_redis().pipeline(transaction=False)
        for name, n in fields.items():
            pipe.hincrby(SMTP_KEY, name, n)
        pipe.hincrbyfloat(SMTP_KEY, "latency_sum", latency_sum)
        pipe.hset(ACTIVITY_KEY, BULK, time.time())
        pipe.execute()
    except (redis.RedisError, OSError) as exc:
        with _buffer.lock:  # try again at the next flush
            _buffer.fields.update(fields)
            _buffer.latency_sum += latency_sum
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


def smtp_figures(client: redis.Redis | None = None) -> dict[str, Any]:
    """{"codes": {"250": n, "none": n}, "sent": n, "buckets": {"0.005": n, …, "+Inf": n}
    (not cumulative), "count": n, "sum": seconds}."""
    raw = _decoded((client or get_redis()).hgetall(SMTP_KEY))  # type: ignore[arg-type]
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
    raw = _decoded((client or get_redis()).hgetall(ACTIVITY_KEY))  # type: ignore[arg-type]
    return {k: float(v) for k, v in raw.items()}


# --- the sending pipeline's hook -----------------------------------------------------------


class TimedTransport:
    """Wraps the process's SMTP transport: every ``send`` is timed and its reply code
    counted (:func:`record_smtp`); results and failures pass through unchanged."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def send(self, sender: str, recipient: str, payload: bytes, then: Any = None) -> Any:
        from mailer.emails.transport import SMTPFailure

        start = time.perf_counter()
        try:
            accepted = self._inner.send(sender, recipient, payload, then)
        except SMTPFailure as failure:
            record_smtp(failure.code, time.perf_counter() - start)
            raise
        record_smtp(accepted.code, time.perf_counter() - start)
        return accepted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def timed(transport: Any) -> TimedTransport:
    return TimedTransport(transport)
