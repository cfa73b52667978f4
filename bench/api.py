"""How fast does /api/v1 answer reads? Subscriber search on a list of 100,000, through the
real web app started as docker-compose.yml starts it (uvicorn, two worker processes), on
PostgreSQL and a private Redis (the per-token rate limit is counted there on every request).

    .venv/bin/python bench/api.py                        # 100,000 subscribers, 8 clients
    .venv/bin/python bench/api.py --subscribers 20000 --seconds 5

Each scenario runs for ``--seconds`` with ``--clients`` threads, each with its own
keep-alive connection, and prints requests per second, p50 and p99 in milliseconds:

- ``GET /healthz``: the baseline, the web stack alone (no token, no database), in the same run;
- the first page of all subscribers, and a page deep in the list (keyset: ``after=``);
- a search by a part of the address that many share, and by one that one reader has;
- one subscriber by its public id.

Figures go to bench/results/api-<time>.json too. The machine is shared: compare figures
within one run (each against the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(base: str, headers: dict[str, str], path_of: Callable[[random.Random], str],
         *, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` threads asking for ``path_of(rng)`` for ``seconds``; every answer must
    be a 200 (a figure of failures would be no figure)."""
    samples: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    deadline = time.perf_counter() + seconds

    def client(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            while time.perf_counter() < deadline:
                path = path_of(rng)
                start = time.perf_counter()
                answer = http.get(path)
                samples[n].append(time.perf_counter() - start)
                if answer.status_code != 200:
                    failures.append(f"{path}: {answer.status_code} {answer.text[:200]}")
                    return

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise SystemExit(failures[0])
    every = sorted(s for per in samples for s in per)
    return {"requests": len(every), "per_second": round(len(every) / elapsed, 1),
            "p50_ms": round(1000 * statistics.median(every), 2),
            "p99_ms": round(1000 * every[int(0.99 * (len(every) - 1))], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscribers", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--web-workers", type=int, default=2,
                    help="uvicorn processes (docker-compose.yml runs 2)")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()

    import psycopg

    from tests.support.redis_server import RedisServer

    db_name = f"mailer_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    workdir = Path(tempfile.mkdtemp(prefix="mailer-bench-api-"))
    redis_server = RedisServer(workdir / "redis").start()
    env = {"MAILER_ENV": "test", "MAILER_SECRET_KEY": secrets.token_urlsafe(32),
           "MAILER_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
           "MAILER_REDIS_URL": redis_server.url, "MAILER_VAR_DIR": str(workdir)}
    os.environ.update(env)
    web = None
    try:
        from mailer import migrate
        from mailer.api_tokens import service
        from mailer.config import get_settings
        from mailer.db import dispose_engines, transaction
        from tests.support.factories import make_subscribers

        migrate.upgrade(get_settings().database_url)
        started = time.perf_counter()
        addresses = make_subscribers(args.subscribers, domains=50)
        seeded = time.perf_counter() - started
        with transaction() as session:
            _, token = service.create(session, name="bench", scopes=["subscribers:read"],
                                      by="bench", rate_limit_per_minute=100_000)
            public_ids = _public_ids(session)
        dispose_engines()

        port = free_port()
        # docker-compose.yml's command for the web service, on loopback.
        web = subprocess.Popen(
            [str(BIN / "uvicorn"), "--factory", "mailer.web.app:create_app", "--host",
             "127.0.0.1", "--port", str(port), "--workers", str(args.web_workers),
             "--no-access-log"],
            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
            stderr=open(workdir / "web.log", "w"))  # noqa: SIM115
        base = f"http://127.0.0.1:{port}"
        _wait(base, web)

        auth = {"Authorization": f"Bearer {token}"}
        n = args.subscribers
        one = addresses[n // 2].split("@")[0] + "@"
        scenarios: dict[str, tuple[dict[str, str], Callable[[random.Random], str]]] = {
            "GET /healthz (baseline)": ({}, lambda rng: "/healthz"),
            "first page (50)": (auth, lambda rng: "/api/v1/subscribers?limit=50"),
            "page deep in the list (50)": (
                auth, lambda rng: f"/api/v1/subscribers?limit=50&after={rng.randrange(n)}"),
            "search a common part (reader0)": (
                auth, lambda rng: "/api/v1/subscribers?email=reader0&limit=50"),
            f"search one reader ({one})": (
                auth, lambda rng: f"/api/v1/subscribers?email={one}&limit=50"),
            "one subscriber by public id": (
                auth, lambda rng: f"/api/v1/subscribers/{rng.choice(public_ids)}"),
        }
        results: dict[str, object] = {"subscribers": n, "clients": args.clients,
                                      "web_workers": args.web_workers,
                                      "seed_seconds": round(seeded, 1)}
        print(f"{n:,} subscribers (seeded in {seeded:.1f} s), {args.clients} clients, "
              f"{args.web_workers} uvicorn workers, {args.seconds:g} s per scenario")
        print(f"{'scenario':45} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for name, (headers, path_of) in scenarios.items():
            figures = load(base, headers, path_of, clients=args.clients, seconds=args.seconds)
            results[name] = figures
            print(f"{name:45} {figures['per_second']:>8} {figures['p50_ms']:>8} "
                  f"{figures['p99_ms']:>8}")
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"api-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
            json.dumps(results, indent=2))
    finally:
        if web is not None:
            web.terminate()
            web.wait(timeout=30)
        redis_server.stop()
        from mailer.db import dispose_engines

        dispose_engines()
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


def _public_ids(session: Session) -> list[str]:
    from sqlalchemy import select

    from mailer.subscribers.models import Subscriber

    return list(session.scalars(select(Subscriber.public_id).order_by(Subscriber.id)))


def _wait(base: str, web: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise SystemExit(f"the web app exited with {web.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the web app did not answer /healthz within 60 s")


if __name__ == "__main__":
    main()
