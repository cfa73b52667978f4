"""What does watching cost? The SMTP counters a worker keeps per message, a /metrics
scrape, the snapshot behind `mailer status`, and an admin page, on a database holding a
sent edition of many deliveries.

    .venv/bin/python bench/ops.py                          # 20,000 deliveries
    .venv/bin/python bench/ops.py --deliveries 100000

Runs on a throw-away SQLite database and a private redis-server of its own (on a free
port, gone afterwards). Prints medians (and the 95th percentile); figures also go to
bench/results/ops-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
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
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    from tests.support.redis_server import RedisServer

    workdir = Path(tempfile.mkdtemp(prefix="mailer-bench-ops-"))
    redis_server = RedisServer(workdir / "redis").start()
    os.environ.update({"MAILER_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
                       "MAILER_VAR_DIR": str(workdir), "MAILER_ENV": "development",
                       "MAILER_REDIS_URL": redis_server.url})
    try:
        run(args)
    finally:
        redis_server.stop()
        from mailer.db import dispose_engines

        dispose_engines()
        shutil.rmtree(workdir, ignore_errors=True)


def timed(fn, runs: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {"median_ms": round(1000 * statistics.median(samples), 3),
            "p95_ms": round(1000 * samples[int(0.95 * (len(samples) - 1))], 3)}


def run(args: argparse.Namespace) -> None:
    from sqlalchemy import insert, update

    from mailer import counters, migrate
    from mailer.config import get_settings
    from mailer.db import transaction, utcnow
    from mailer.deliveries.models import Delivery
    from mailer.editions.models import Edition
    from mailer.ops import metrics
    from mailer.ops import status as ops_status
    from tests.support.factories import make_edition, make_subscribers

    migrate.upgrade(get_settings().database_url)
    make_subscribers(args.deliveries)
    edition_id = make_edition()
    now = utcnow()
    with transaction() as session:
        ids = list(range(1, args.deliveries + 1))
        rows = [{"edition_id": edition_id, "subscriber_id": i, "state": "sent", "attempts": 1,
                 "updated_at": now, "sent_at": now - dt.timedelta(seconds=i % 3600),
                 "smtp_code": 250} for i in ids]
        for start in range(0, len(rows), 5000):
            session.execute(insert(Delivery), rows[start:start + 5000])
        # An edition half-way through its send: the progress and rate queries do real work.
        session.execute(update(Delivery).where(Delivery.id % 2 == 0)
                        .values(state="queued", sent_at=None))
        session.execute(update(Edition).where(Edition.id == edition_id)
                        .values(state="sending", audience_count=args.deliveries, started_at=now))

    results: dict[str, object] = {"deliveries": args.deliveries}
    n = 200_000
    start = time.perf_counter()
    for i in range(n):
        counters.record_smtp(250 if i % 50 else 451, 0.004)
    counters.flush()
    results["record_smtp_us_per_message"] = round(1e6 * (time.perf_counter() - start) / n, 3)
    results["smtp_counted"] = counters.smtp_figures()["count"]

    results["metrics_scrape"] = timed(metrics.render, args.runs)
    results["metrics_bytes"] = len(metrics.render())

    def snapshot() -> None:
        with transaction() as session:
            ops_status.collect(session)

    results["status_snapshot"] = timed(snapshot, args.runs)

    import warnings

    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

    from mailer.staff import accounts
    from mailer.web.app import create_app

    with transaction() as session:
        accounts.create(session, email="bench@example.org", password="bench password 1",
                        role="editor", by="bench")
    client = TestClient(create_app())
    page = client.get("/admin/login")
    import re

    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    client.post("/admin/login", data={"csrf": token, "email": "bench@example.org",
                                      "password": "bench password 1"})
    for path in ("/admin/editions", f"/admin/editions/{edition_id}", "/admin/ops",
                 f"/admin/editions/{edition_id}/progress.json"):
        assert client.get(path).status_code == 200, path
        results[f"GET {path}"] = timed(lambda path=path: client.get(path), args.runs)

    for key, value in results.items():
        print(f"{key:45} {value}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"ops-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
