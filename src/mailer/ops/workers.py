"""Which Celery workers are alive: each worker's main process writes a heartbeat to Redis.

A worker counts as alive while its heartbeat is younger than three intervals. This works
across machines (every worker shares the broker's Redis), costs the reader one round trip
(:func:`ask`), and a worker killed with ``kill -9`` drops out on its own when its beats stop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from mailer.config import OpsSettings
from mailer.redis import get_redis

log = logging.getLogger(__name__)

WORKERS_KEY = "mailer:ops:workers"  # sorted set: hostname → time of its last beat
INFO_PREFIX = "mailer:ops:worker:"  # hostname → JSON: pid, queues, concurrency, started


@dataclass(frozen=True)
class WorkerInfo:
    hostname: str
    last_beat: float
    pid: int | None = None
    queues: tuple[str, ...] = ()
    concurrency: int | None = None
    started_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "pid": self.pid, "queues": list(self.queues),
                "concurrency": self.concurrency, "started_at": self.started_at,
                "seconds_since_beat": round(max(0.0, time.time() - self.last_beat), 1)}


def _ttl(ops: OpsSettings) -> float:
    """A worker is alive while its last beat is younger than three intervals."""
    return 3 * ops.worker_heartbeat_seconds


def beat(hostname: str, info: dict[str, Any], *, ops: OpsSettings,
         client: redis.Redis | None = None) -> None:
    r = client or get_redis()
    now = time.time()
    pipe = r.pipeline(transaction=False)
    pipe.zadd(WORKERS_KEY, {hostname: now})
    pipe.set(INFO_PREFIX + hostname, json.dumps(info), ex=int(_ttl(ops)) + 1)
    # Workers gone for a day are forgotten.
    pipe.zremrangebyscore(WORKERS_KEY, "-inf", now - 86400)
    pipe.execute()


def forget(hostname: str) -> None:
    try:
        r = get_redis()
        r.zrem(WORKERS_KEY, hostname)
        r.delete(INFO_PREFIX + hostname)
    except redis.RedisError as exc:
        log.warning("could not remove the heartbeat of %s: %s", hostname, exc)


def alive(*, ops: OpsSettings, client: redis.Redis | None = None) -> list[WorkerInfo]:
    """The workers whose last heartbeat is recent enough (``ops.worker_heartbeat_seconds``).
    Raises RedisError."""
    r = client or get_redis()
    pipe = r.pipeline(transaction=False)
    ask(pipe, ops)
    return answer(pipe.execute(), r)


#: How many replies :func:`ask` queues on a pipeline.
ASKED = 1


def ask(pipe: Pipeline, ops: OpsSettings) -> None:
    """Queue on ``pipe`` what :func:`answer` reads (``ASKED`` replies): the workers that
    beat lately, with their beats' times."""
    pipe.zrangebyscore(WORKERS_KEY, time.time() - _ttl(ops), "+inf", withscores=True)


def answer(replies: list[Any], client: redis.Redis) -> list[WorkerInfo]:
    """The live workers from the replies to :func:`ask`, by host name, each with its info
    (``MGET``, one more round trip, when any is alive). Raises RedisError."""
    [members] = replies
    names = [_text(member) for member, _ in members]
    infos = client.mget([INFO_PREFIX + n for n in names]) if names else []
    out = []
    for name, (_, score), raw in zip(names, members, infos, strict=True):
        data: dict[str, Any] = {}
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                data = {}
        out.append(WorkerInfo(hostname=name, last_beat=float(score), pid=data.get("pid"),
                              queues=tuple(data.get("queues") or ()),
                              concurrency=data.get("concurrency"),
                              started_at=data.get("started_at")))
    return sorted(out, key=lambda w: w.hostname)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Heartbeat:
    """A daemon thread in a worker's main process that beats every
    ``ops.worker_heartbeat_seconds`` until stopped."""

    def __init__(self, hostname: str, info: dict[str, Any], *, ops: OpsSettings) -> None:
        self.hostname, self.info = hostname, {**info, "started_at": time.time()}
        self.ops = ops
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mailer-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        interval = self.ops.worker_heartbeat_seconds
        while not self._stop.is_set():
            try:
                beat(self.hostname, self.info, ops=self.ops)
            except (redis.RedisError, OSError) as exc:
                log.warning("worker heartbeat not written: %s", exc)
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        forget(self.hostname)
