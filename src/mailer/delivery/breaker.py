"""The circuit breaker: stop a send whose first messages (or any later window) bounce or
get rejected for policy far more than a healthy list does.

Outcomes are counted in Redis in fixed windows of ``breaker_window`` messages per edition,
shared by every worker. When a window is complete, its hard-bounce and policy-rejection
rates are compared with the thresholds; over either, the edition is paused with the reason.
If Redis is unreachable the breaker says nothing (the send goes on; the sweeper and the
operators' alerts still see the database).
"""

from __future__ import annotations

import logging

import redis

from mailer.config import get_settings
from mailer.redis import get_redis

log = logging.getLogger(__name__)

_NOTE = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 604800)
local window = tonumber(ARGV[2])
local k = math.floor((n - 1) / window)
local key = KEYS[2] .. k
redis.call('HINCRBY', key, 'total', 1)
if ARGV[1] ~= 'ok' then redis.call('HINCRBY', key, ARGV[1], 1) end
redis.call('EXPIRE', key, 604800)
if n % window == 0 then
  local hard = tonumber(redis.call('HGET', key, 'hard') or '0')
  return {k, hard, tonumber(redis.call('HGET', key, 'policy') or '0')}
end
return nil
"""


def note(edition_id: int, kind: str) -> str | None:
    """Count one outcome (ok, hard, policy, other); the reason to pause, if a window trips."""
    settings = get_settings()
    window = settings.breaker_window
    try:
        closed = get_redis().eval(
            _NOTE, 2, f"mailer:breaker:{edition_id}:n", f"mailer:breaker:{edition_id}:w:",
            kind, window,
        )
    except redis.RedisError as exc:
        log.warning("circuit breaker cannot reach Redis: %s", exc, extra={"edition_id": edition_id})
        return None
    if not closed:
        return None
    index, hard, policy = (int(x) for x in closed)
    first, last = index * window + 1, (index + 1) * window
    if hard / window > settings.breaker_hard_bounce_rate:
        return (f"circuit breaker: {hard} hard bounces in messages {first}–{last} "
                f"({100 * hard / window:.1f} % > {100 * settings.breaker_hard_bounce_rate:.1f} %)")
    if policy / window > settings.breaker_policy_rate:
        return (f"circuit breaker: {policy} policy rejections in messages {first}–{last} "
                f"({100 * policy / window:.1f} % > {100 * settings.breaker_policy_rate:.1f} %)")
    return None


def reset(edition_id: int) -> None:
    r = get_redis()
    keys = list(r.scan_iter(f"mailer:breaker:{edition_id}:*"))
    if keys:
        r.delete(*keys)
