"""How long the sign-up answer takes, per kind of address: new, pending, confirmed,
unsubscribed, and "again" (an address signed up a moment before: over the per-address
limit, so no new link and no mail). The standard wants them equal within a few ms, so
that timing does not tell an outsider whether an address is subscribed, or signed up today.

Starts the web app under uvicorn on a fresh SQLite database (or the PostgreSQL database
given with --database-url, which must be empty), prepares the addresses through the
service functions, then posts the form for them in random order over one keep-alive
connection and prints the median and the 90th percentile per kind.

No worker runs: the confirmation tasks pile up in the Redis database given with
--redis-url, which must be empty at the start and is emptied at the end.

    .venv/bin/python bench/signup_timing.py --redis-url redis://127.0.0.1:6379/8 -n 200
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("new", "pending", "confirmed", "unsubscribed", "again")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True, help="an EMPTY Redis database")
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("-n", type=int, default=200, help="requests per kind (default 200)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="signup-bench-"))
    from tests.support.processes import WebServer, free_port

    port = free_port()
    env = {
        "MAILER_ENV": "test",
        "MAILER_SECRET_KEY": secrets.token_urlsafe(32),
        "MAILER_DATABASE_URL": args.database_url or f"sqlite:///{tmp / 'bench.db'}",
        "MAILER_REDIS_URL": args.redis_url,
        "MAILER_BASE_URL": f"http://127.0.0.1:{port}",
        "MAILER_VAR_DIR": str(tmp / "var"),
        "MAILER_SIGNUP_LIMIT_PER_IP_PER_HOUR": "100000000",
        "MAILER_CONFIRMATION_MAILS_PER_ADDRESS_PER_DAY": "1",  # the default: "again" is over
    }
    os.environ.update(env)

    from mailer import migrate
    from mailer.config import get_settings
    from mailer.redis import get_redis

    redis = get_redis()
    if redis.dbsize():
        sys.exit(f"{args.redis_url} is not empty; give an empty Redis database")
    migrate.upgrade(get_settings().database_url)
    addresses = prepare(args.n)

    server = WebServer({**os.environ, **env}, tmp / "web.log", port).start()
    try:
        times = measure(f"http://127.0.0.1:{port}", addresses)
    finally:
        server.stop()
        redis.flushdb()
    report(times, env["MAILER_DATABASE_URL"].split(":", 1)[0])


def prepare(n: int) -> dict[str, list[str]]:
    """``n`` addresses of each kind, made the way real ones come about."""
    from mailer.config import get_settings
    from mailer.db import transaction
    from mailer.lists.service import default_list, subscription
    from mailer.subscribers.signup import Origin, Profile, sign_up
    from mailer.subscribers.unsubscribe import unsubscribe

    run = secrets.token_hex(3)
    addresses = {kind: [f"{kind}-{run}-{i}@example.org" for i in range(n)] for kind in KINDS}
    origin = Origin(source="bench", ip="127.0.0.1", user_agent="bench")
    with transaction() as session:
        for kind in ("pending", "confirmed", "unsubscribed"):
            for email in addresses[kind]:
                first = default_list(session)
                subscriber = sign_up(session, email=email, profile=Profile(),
                                     origin=origin, signup=get_settings().signup, lists=[first])
                if kind != "pending":
                    held = subscription(session, subscriber.id, first.id)
                    assert held is not None
                    held.status = "confirmed"
                if kind == "unsubscribed":
                    unsubscribe(session, subscriber, list_id=None, channel="bench")
    return addresses


def measure(base_url: str, addresses: dict[str, list[str]]) -> dict[str, list[float]]:
    import httpx

    order = [(kind, email) for kind in KINDS for email in addresses[kind]]
    random.shuffle(order)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with httpx.Client(base_url=base_url) as client:
        for i in range(20):  # warm up the process (imports, first connections)
            client.post("/subscribe", data={"email": f"warm{i}@example.org", "consent": "yes"})
        for email in addresses["again"]:  # their first sign-up, not measured
            client.post("/subscribe", data={"email": email, "consent": "yes",
                                            "first_name": "Bench"})
        for kind, email in order:
            started = time.perf_counter()
            answer = client.post("/subscribe", data={"email": email, "consent": "yes",
                                                     "first_name": "Bench"})
            elapsed = time.perf_counter() - started
            if answer.status_code != 200:
                sys.exit(f"{email}: unexpected {answer.status_code}")
            times[kind].append(elapsed * 1000)
    return times


def report(times: dict[str, list[float]], backend: str) -> None:
    print(f"sign-up answer time on {backend}, ms (n={len(times['new'])} per kind)")
    print(f"{'kind':<14}{'median':>8}{'p90':>8}")
    for kind in KINDS:
        values = sorted(times[kind])
        p90 = values[int(len(values) * 0.9) - 1]
        print(f"{kind:<14}{statistics.median(values):8.2f}{p90:8.2f}")


if __name__ == "__main__":
    main()
