"""Rate limits kept in Redis, shared by every web process and every worker."""

from __future__ import annotations

import time

from mailer.redis import get_redis

# A fixed-window counter: INCR, and set the expiry on the first hit of the window.
_WINDOW = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""

# A token bucket for message rates: returns 0 when a token was taken, else the number of
# milliseconds to wait before one is available. ARGV: rate per second, burst, now in ms.
_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""


def hit(key: str, limit: int, window_seconds: int) -> bool:
    """Count one event under ``key``; False once more than ``limit`` fell in the window."""
    count = get_redis().eval(_WINDOW, 1, f"mailer:rl:{key}", window_seconds)
    return int(count) <= limit


def take_token(key: str, rate_per_second: float, burst: float | None = None) -> float:
    """Take one token from the bucket; returns 0, or the seconds to wait before trying again."""
    burst = burst or max(1.0, rate_per_second)
    now_ms = int(time.time() * 1000)
    wait_ms = get_redis().eval(_BUCKET, 1, f"mailer:bucket:{key}", rate_per_second, burst, now_ms)
    return int(wait_ms) / 1000.0


def wait_for_token(key: str, rate_per_second: float) -> None:
    """Block until the bucket ``key`` lets one message through (no limit when rate is 0)."""
    if rate_per_second <= 0:
        return
    while (wait := take_token(key, rate_per_second)) > 0:
        time.sleep(wait)
