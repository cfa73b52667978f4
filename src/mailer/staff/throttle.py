"""Login throttles in Redis: per client address, and per address and account, with back-off.

Why not lock an account after N wrong passwords? Because then anyone who knows a staff
member's address can keep them locked out, from anywhere, for ever. Here every failure
(wrong password, unknown address, wrong second-factor code) counts twice:

- against the client's IP address: after ``login_free_attempts_per_ip`` failures the
  address must wait ``login_backoff_seconds`` before its next attempt, and each further
  failure doubles the wait (at most ``login_backoff_max_seconds``);
- against the pair (IP address, account as typed): the same, after
  ``login_free_attempts_per_account_and_ip`` failures. This is the per-account
  protection, in the only form a stranger cannot turn against the account: it slows down
  whoever guesses this account's password from that address, and nobody else.

A staff member logging in from another address is never slowed down by a stranger's
guesses. (Two people behind one NAT share an address: a guesser in the same office slows
the office down, and the audit log names the address.) Many addresses guessing one
account are not stopped by this alone: argon2 makes each guess slow, passwords have at
least 10 characters, and a second factor (``totp.py``) makes a guessed password useless.

A success forgets the failures of its (address, account) pair, not those of the address.
Counters forget themselves ``login_failure_window_minutes`` after the last failure. A
throttled attempt is answered without checking the password at all.
"""

from __future__ import annotations

import hashlib
import time

from mailer.config import StaffSettings
from mailer.redis import get_redis

# KEYS[1]: the counter. ARGV: now, free attempts, first wait, longest wait, window.
# Counts a failure; returns the seconds to wait before the next attempt (0: none).
_FAIL = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local free = tonumber(ARGV[2])
local wait = 0
if failures >= free then
  wait = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ (failures - free))
end
redis.call('HSET', KEYS[1], 'until', tonumber(ARGV[1]) + wait)
redis.call('EXPIRE', KEYS[1], math.max(tonumber(ARGV[5]), math.ceil(wait)))
return tostring(wait)
"""


def _account(email: str) -> str:
    # The account as typed (case and spaces aside): an unknown address counts like a known
    # one, so the answer never tells which exist.
    return hashlib.sha256(" ".join(email.split()).casefold().encode(
        "utf-8", "surrogatepass")).hexdigest()[:32]


def _keys(ip: str, email: str) -> tuple[str, str]:
    return f"mailer:login:ip:{ip}", f"mailer:login:ip-account:{ip}:{_account(email)}"


def wait_seconds(ip: str, email: str) -> int:
    """How long this address must wait before it may try this account again (0: now)."""
    now = time.time()
    pipe = get_redis().pipeline(transaction=False)
    for key in _keys(ip, email):
        pipe.hget(key, "until")
    until = [float(value) for value in pipe.execute() if value is not None]
    return max([0, *(int(-(-(u - now) // 1)) for u in until)])


def record_failure(ip: str, email: str, staff: StaffSettings) -> int:
    """Count a failed attempt; the seconds the address must now wait (0: none yet), by the
    throttles of ``staff``."""
    window = staff.login_failure_window_minutes * 60
    by_ip, by_account = _keys(ip, email)
    redis = get_redis()
    waits = [
        float(redis.eval(_FAIL, 1, key, time.time(), free, staff.login_backoff_seconds,
                         staff.login_backoff_max_seconds, window))
        for key, free in ((by_ip, staff.login_free_attempts_per_ip),
                          (by_account, staff.login_free_attempts_per_account_and_ip))
    ]
    return int(-(-max(waits) // 1))


def record_success(ip: str, email: str) -> None:
    get_redis().delete(_keys(ip, email)[1])


def forget_account(email: str) -> int:
    """Forget every address's failures for this account (``mailer staff unlock``); how many
    counters there were."""
    redis = get_redis()
    keys = list(redis.scan_iter(f"mailer:login:ip-account:*:{_account(email)}", count=1000))
    return int(redis.delete(*keys)) if keys else 0
