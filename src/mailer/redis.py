"""The Redis client (rate limits, counters, queue depth) shared within a process."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

from mailer.config import get_settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3,
                                health_check_interval=30, decode_responses=False)


def get_redis() -> redis.Redis:
    return _client(get_settings().redis_url)


@lru_cache(maxsize=4)
def _hasty_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25,
                                health_check_interval=30, decode_responses=False)


def get_hasty_redis() -> redis.Redis:
    """A client that gives up after a quarter of a second, for a reader's request that
    must not wait on a slow or absent Redis (a followed link)."""
    return _hasty_client(get_settings().redis_url)


@lru_cache(maxsize=4)
def _hasty_async_client(url: str) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25,
                                        health_check_interval=30, decode_responses=False)


def get_hasty_async_redis() -> redis.asyncio.Redis:
    """:func:`get_hasty_redis` for a route that runs on the web process's event loop (one
    loop per process: the client keeps its connections on it)."""
    return _hasty_async_client(get_settings().redis_url)


def reset_redis() -> None:
    _client.cache_clear()
    _hasty_client.cache_clear()
    _hasty_async_client.cache_clear()


def masked_url(url: str) -> str:
    """The Redis URL with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redis_reachable(url: str | None = None) -> str | None:
    """None when Redis answers, else one line saying what is wrong and how to fix it."""
    url = url or get_settings().redis_url
    try:
        _client(url).ping()
    except (redis.RedisError, OSError) as exc:
        return (f"not reachable at {masked_url(url)} ({exc}). Start it (`make run` starts one "
                "of its own under var/), or point MAILER_REDIS_URL at a running one.")
    return None
