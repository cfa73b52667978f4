"""How much work waits in each Celery queue, read straight from the broker's Redis.

Celery on Redis keeps a queue as a Redis list under the queue's name (and, for messages
sent with a priority, under the name plus a priority suffix), and the messages that
workers hold but have not acknowledged yet (running, or waiting for a retry's countdown)
in the hash ``unacked``.

"Not draining" means: the queue has held work for longer than ``queue_stall_seconds``
and no worker has started, finished or sent anything from it for that long either.
Since when a queue holds work is noted whenever the depths are read (every scrape).
For the bulk queue, work is also what waits in the database (``waiting``): after a Redis
restart the queue itself is empty while deliveries wait for the sweeper and a worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from mailer.counters import ACTIVITY_KEY, activity_of
from mailer.redis import get_redis
from mailer.tasks import QUEUES

#: kombu's Redis transport: priority queues are "<name>\x06\x16<priority>".
_PRIORITY_SEP = "\x06\x16"
_PRIORITIES = (3, 6, 9)
NONEMPTY_KEY = "mailer:ops:queue_nonempty_since"


@dataclass(frozen=True)
class QueueState:
    name: str
    depth: int
    waiting_since: float | None  # when it was first seen holding work (None: empty)
    last_activity: float | None  # when a worker last started, finished or sent from it
    stalled: bool
    #: Deliveries waiting in the database for this queue's workers (bulk only; None: not
    #: counted).
    deliveries_waiting: int | None = None

    @property
    def holds_work(self) -> bool:
        return bool(self.depth or self.deliveries_waiting)

    def as_dict(self) -> dict[str, object]:
        now = time.time()
        return {
            "queue": self.name, "depth": self.depth, "stalled": self.stalled,
            "deliveries_waiting": self.deliveries_waiting,
            "waiting_seconds": round(now - self.waiting_since) if self.waiting_since else 0,
            "idle_seconds": round(now - self.last_activity) if self.last_activity else None,
        }


def depth(client: redis.Redis, name: str) -> int:
    pipe = client.pipeline(transaction=False)
    _ask_depth(pipe, name)
    return sum(int(n) for n in pipe.execute())


def _ask_depth(pipe: Pipeline, name: str) -> None:
    pipe.llen(name)
    for priority in _PRIORITIES:
        pipe.llen(f"{name}{_PRIORITY_SEP}{priority}")


def unacked(client: redis.Redis | None = None) -> int:
    return int((client or get_redis()).hlen("unacked"))


def states(stall: float, client: redis.Redis | None = None,
           waiting: dict[str, int] | None = None) -> list[QueueState]:
    """Every queue's depth and whether it is stalled. ``waiting``: work per queue that
    waits in the database. Raises RedisError."""
    r = client or get_redis()
    pipe = r.pipeline(transaction=False)
    ask(pipe)
    return answer(pipe.execute(), stall, r, waiting)


#: How many replies :func:`ask` queues on a pipeline.
ASKED = 2 + len(QUEUES) * (1 + len(_PRIORITIES))


def ask(pipe: Pipeline) -> None:
    """Queue on ``pipe`` what :func:`answer` reads (``ASKED`` replies): the queues' last
    activity, since when each has held work, and every queue's lists. One round trip for
    all of it: every admin page's banner asks (it was six)."""
    pipe.hgetall(ACTIVITY_KEY)
    pipe.hgetall(NONEMPTY_KEY)
    for name in QUEUES:
        _ask_depth(pipe, name)


def answer(replies: list[Any], stall: float, client: redis.Redis,
           waiting: dict[str, int] | None = None) -> list[QueueState]:
    """The queues' states from the replies to :func:`ask`. A queue that starts or stops
    holding work is noted in ``NONEMPTY_KEY`` (a second round trip, only then)."""
    now = time.time()
    activity = activity_of(replies[0])
    seen = {(k.decode() if isinstance(k, bytes) else k): float(v)
            for k, v in replies[1].items()}
    depths, per_queue = replies[2:], 1 + len(_PRIORITIES)
    notes = client.pipeline(transaction=False)
    out = []
    for i, name in enumerate(QUEUES):
        n = sum(int(d) for d in depths[i * per_queue:(i + 1) * per_queue])
        in_database = (waiting or {}).get(name)
        since: float | None
        if n or in_database:
            since = seen.get(name)
            if since is None:
                notes.hsetnx(NONEMPTY_KEY, name, now)
                since = now
        else:
            since = None
            if name in seen:
                notes.hdel(NONEMPTY_KEY, name)
        last = activity.get(name)
        stalled = bool(n or in_database) and since is not None and now - since >= stall and (
            last is None or now - last >= stall)
        out.append(QueueState(name, n, since, last, stalled, in_database))
    if len(notes):
        notes.execute()
    return out
