"""The circuit breaker: stop a send whose first messages (or any later window) bounce or
get rejected for policy far more than a healthy list does.

Outcomes are counted in Redis in windows of about ``breaker_window`` messages per edition,
shared by every worker. When a window is complete, its hard-bounce and policy-rejection
rates are compared with the thresholds; over either, the edition is paused with the reason.
If Redis is unreachable the breaker says nothing (the send goes on; the sweeper and the
operators' alerts still see the database).
"""

from __future__ import annotations

import logging

import redis

from mailer.config import SendingSettings
from mailer.redis import get_redis

log = logging.getLogger(__name__)

_NOTE = """
local add = tonumber(ARGV[2]) + tonumber(ARGV[3]) + tonumber(ARGV[4])
local window = tonumber(ARGV[1])
local after = redis.call('INCRBY', KEYS[1], add)
redis.call('EXPIRE', KEYS[1], 604800)
local before = after - add
local key = KEYS[2] .. math.floor((after - 1) / window)
redis.call('HINCRBY', key, 'total', add)
redis.call('HINCRBY', key, 'hard', ARGV[3])
redis.call('HINCRBY', key, 'policy', ARGV[4])
redis.call('EXPIRE', key, 604800)
if math.floor(before / window) < math.floor(after / window) then
  local done = KEYS[2] .. (math.floor(after / window) - 1)
  local c = redis.call('HMGET', done, 'total', 'hard', 'policy')
  return {math.floor(after / window) - 1, tonumber(c[1] or '0'), tonumber(c[2] or '0'),
          tonumber(c[3] or '0')}
end
return nil
"""

_KIND = {"hard bounce": "hard", "policy rejection": "policy"}


class Tally:
    """Outcomes counted in the worker and added to the shared windows in one Redis call
    every few hundred milliseconds, not one per message."""

    def __init__(self, edition_id: int, sending: SendingSettings) -> None:
        self.edition_id = edition_id
        self.sending = sending
        self.counts = {"other": 0, "hard": 0, "policy": 0}

    def add(self, label: str) -> None:
        self.counts[_KIND.get(label, "other")] += 1

    def flush(self) -> str | None:
        """Add what was counted; the reason to pause if a completed window tripped."""
        counts, self.counts = self.counts, {"other": 0, "hard": 0, "policy": 0}
        if not any(counts.values()):
            return None
        return _note(self.edition_id, counts, self.sending)


def _note(edition_id: int, counts: dict[str, int], sending: SendingSettings) -> str | None:
    window = sending.breaker_window
    try:
        closed = get_redis().eval(
            _NOTE, 2, f"mailer:breaker:{edition_id}:n", f"mailer:breaker:{edition_id}:w:",
            window, counts["other"], counts["hard"], counts["policy"],
        )
    except redis.RedisError as exc:
        log.warning("circuit breaker cannot reach Redis: %s", exc, extra={"edition_id": edition_id})
        return None
    if not closed:
        return None
    index, total, hard, policy = (int(x) for x in closed)
    total = max(total, 1)
    first, last = index * window + 1, (index + 1) * window
    if hard / total > sending.breaker_hard_bounce_rate:
        return (f"circuit breaker: {hard} hard bounces in messages {first}–{last} "
                f"({100 * hard / total:.1f} % > {100 * sending.breaker_hard_bounce_rate:.1f} %)")
    if policy / total > sending.breaker_policy_rate:
        return (f"circuit breaker: {policy} policy rejections in messages {first}–{last} "
                f"({100 * policy / total:.1f} % > {100 * sending.breaker_policy_rate:.1f} %)")
    return None
