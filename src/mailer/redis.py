"""The Redis client (rate limits, counters, queue depth) shared within a process."""

from __future__ import annotations

from functools import lru_cache

import redis

from mailer.config import get_settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3,
                                health_check_interval=30, decode_responses=False)


def get_redis() -> redis.Redis:
    return _client(get_settings().redis_url)


def reset_redis() -> None:
    _client.cache_clear()


def redis_reachable() -> str | None:
    """None when Redis answers, else a sentence saying what is wrong and how to fix it."""
    url = get_settings().redis_url
    try:
        get_redis().ping()
    except redis.RedisError as exc:
        return (
            f"Redis is not reachable at {url} ({exc}). Start it, for example with "
            "`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''`, "
            "or point MAILER_REDIS_URL at a running one."
        )
    return None
