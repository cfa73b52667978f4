"""How fast do webhook events go out? Events delivered per second by a worker started as
Procfile.dev starts it (4 processes), against a baseline measured in the same run: raw
POSTs per second from one client, keeping its connection, to the same receiver.

    .venv/bin/python bench/webhooks.py                      # 2,000 events
    .venv/bin/python bench/webhooks.py --events 10000
    .venv/bin/python bench/webhooks.py --database postgresql+psycopg://postgres@127.0.0.1/bench

Runs on a throw-away SQLite database (or the one named, which it migrates) and a private
redis-server of its own; the receiver is tests/support/receiver.py (a threaded
http.server on loopback). The events are committed in one transaction; the time runs from
that commit until the last delivery is recorded as delivered. Figures also go to
bench/results/webhooks-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--database", default="")
    args = parser.parse_args()
    from tests.support.redis_server import RedisServer

    workdir = Path(tempfile.mkdtemp(prefix="mailer-bench-webhooks-"))
    redis_server = RedisServer(workdir / "redis").start()
    os.environ.update({
        "MAILER_DATABASE_URL": args.database or f"sqlite:///{workdir / 'bench.db'}",
        "MAILER_VAR_DIR": str(workdir), "MAILER_ENV": "development",
        "MAILER_REDIS_URL": redis_server.url,
        "MAILER_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
    })
    try:
        run(args, workdir)
    finally:
        redis_server.stop()
        from mailer.db import dispose_engines

        dispose_engines()
        shutil.rmtree(workdir, ignore_errors=True)


def raw_posts_per_second(url: str, body: bytes, count: int) -> float:
    import httpx

    with httpx.Client() as client:
        client.post(url, content=body)  # the connection, opened once
        start = time.perf_counter()
        for _ in range(count):
            client.post(url, content=body, headers={"Content-Type": "application/json"})
        return count / (time.perf_counter() - start)


def run(args: argparse.Namespace, workdir: Path) -> None:
    from sqlalchemy import func, select

    from mailer import migrate
    from mailer.config import get_settings
    from mailer.db import transaction
    from mailer.webhooks import endpoints, events
    from mailer.webhooks.models import DeliveryState, WebhookDelivery
    from tests.support.processes import UserWorker
    from tests.support.receiver import Receiver

    settings = get_settings()
    migrate.upgrade(settings.database_url)
    receiver = Receiver().start()
    data = {"subscriber": {"id": "x" * 22, "email": "reader@example.org", "first_name": "Anna",
                           "last_name": "Schmidt", "organisation": "CEP", "country": "NL",
                           "status": "confirmed", "source": "web"}}
    body = json.dumps({"type": events.CONFIRMED, "timestamp": "2026-12-03T10:00:00Z",
                       "data": data}).encode()
    baseline = raw_posts_per_second(receiver.url, body, min(args.events, 2000))
    before = receiver.count()

    with transaction() as session:
        endpoints.add(session, url=receiver.url, events=[events.CONFIRMED], by="bench",
                      settings=settings.webhooks)
    worker = UserWorker(dict(os.environ), workdir / "worker.log").start()
    try:
        with transaction() as session:
            for _ in range(args.events):
                events.emit(session, events.CONFIRMED, data)
        start = time.perf_counter()  # the commit above published the tasks
        delivered = 0
        while delivered < args.events:
            time.sleep(0.05)
            with transaction() as session:
                delivered = session.scalar(select(func.count()).where(
                    WebhookDelivery.state == DeliveryState.delivered)) or 0
            if time.perf_counter() - start > 600:
                raise SystemExit(f"only {delivered} of {args.events} delivered in 10 minutes")
        elapsed = time.perf_counter() - start
    finally:
        worker.stop()
        receiver.stop()
    rate = args.events / elapsed
    # Celery logs each task's own time: what one delivery costs inside the worker.
    task_seconds = sorted(float(t) for t in re.findall(
        r"workers\.webhooks\.deliver\[[^\]]+\] succeeded in ([0-9.]+)s", worker.output()))
    task_ms = 1000 * statistics.median(task_seconds) if task_seconds else float("nan")
    figures = {
        "events": args.events, "database": settings.database_url.split(":")[0],
        "raw_posts_per_second_one_client": round(baseline, 1),
        "webhook_events_delivered_per_second": round(rate, 1),
        "ratio_to_baseline": round(rate / baseline, 3),
        "median_task_ms": round(task_ms, 1),
        "posts_received": receiver.count() - before,
    }
    print(f"raw POSTs, one client, kept-alive:  {baseline:8.1f} /s")
    print(f"webhook events delivered (worker):  {rate:8.1f} /s  "
          f"({rate / baseline:.2f}× the baseline; {args.events:,} events in {elapsed:.1f} s, "
          f"{figures['posts_received']:,} posts received)")
    print(f"one delivery task in the worker:    {task_ms:8.1f} ms (median, Celery's own time)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"webhooks-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
