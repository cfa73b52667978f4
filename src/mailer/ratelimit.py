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

# A token bucket for message rates. ARGV: rate per second, burst, now in ms, tokens wanted.
# Returns how many tokens were taken (at least 1, at most wanted), or minus the number of
# milliseconds to wait before one is available.
_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local result
if tokens >= 1 then
  result = math.min(wanted, math.floor(tokens))
  tokens = tokens - result
else
  result = -math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return result
"""


# The same bucket for several keys at once. ARGV: now in ms, then rate, burst, wanted for
# each key. Returns the tokens taken per key (0 when that bucket is empty: no waiting here).
_BUCKETS = """
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local wanted = tonumber(ARGV[3 * i + 1])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
  local taken = math.min(wanted, math.floor(tokens))
  tokens = tokens - taken
  redis.call('HSET', key, 'tokens', tokens, 'at', now)
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
  out[i] = taken
end
return out
"""


def hit(key: str, limit: int, window_seconds: int) -> bool:
    """Count one event under ``key``; False once more than ``limit`` fell in the window."""
    count = get_redis().eval(_WINDOW, 1, f"mailer:rl:{key}", window_seconds)
    return int(count) <= limit


def take_tokens(key: str, rate_per_second: float, wanted: int = 1) -> tuple[int, float]:
    """Take up to ``wanted`` tokens from the shared bucket ``key``.

    Returns (tokens taken, 0.0), or (0, seconds to wait before one is available)."""
    burst = max(1.0, rate_per_second)
    now_ms = int(time.time() * 1000)
    answer = int(get_redis().eval(_BUCKET, 1, f"mailer:bucket:{key}", rate_per_second, burst,
                                  now_ms, wanted))
    return (answer, 0.0) if answer > 0 else (0, -answer / 1000.0)


class LocalTokens:
    """A process's small stock of tokens from the shared buckets.

    Taking tokens one Redis call at a time costs a round trip per message; a process takes
    up to a tenth of a second's worth at once and spends them within that second. Every
    token still comes from the shared bucket, so the rate across all workers holds; unspent
    tokens are dropped after a second rather than saved up for a burst."""

    HOLD_SECONDS = 1.0

    def __init__(self) -> None:
        self.stock: dict[str, tuple[int, float]] = {}

    def reserve(self, wanted: dict[str, tuple[float, int]]) -> None:
        """Take, in one Redis call, up to the tokens the next messages need: {key: (rate per
        second, how many)}. What a bucket cannot give now is waited for message by message
        in :meth:`wait`. Raises RedisError."""
        keys = [k for k, (rate, n) in wanted.items() if rate > 0 and n > 0]
        if not keys:
            return
        args: list[float] = [int(time.time() * 1000)]
        for key in keys:
            rate, n = wanted[key]
            # No more than one take of wait() would hold: a tenth of a second's tokens.
            args += [rate, max(1.0, rate), min(n, max(1, int(rate / 10)))]
        got = get_redis().eval(_BUCKETS, len(keys), *(f"mailer:bucket:{k}" for k in keys), *args)
        now = time.monotonic()
        for key, taken in zip(keys, got, strict=True):
            if int(taken) > 0:
                count, taken_at = self.stock.get(key, (0, 0.0))
                if now - taken_at >= self.HOLD_SECONDS:
                    count = 0
                self.stock[key] = (count + int(taken), now)

    def wait(self, key: str, rate_per_second: float) -> None:
        """Block until one message may go out under the bucket ``key`` (rate 0: no limit)."""
        if rate_per_second <= 0:
            return
        count, taken_at = self.stock.get(key, (0, 0.0))
        if count > 0 and time.monotonic() - taken_at < self.HOLD_SECONDS:
            self.stock[key] = (count - 1, taken_at)
            return
        chunk = max(1, int(rate_per_second / 10))
        while True:
            got, wait = take_tokens(key, rate_per_second, chunk)
            if got:
                self.stock[key] = (got - 1, time.monotonic())
                return
            time.sleep(wait)
