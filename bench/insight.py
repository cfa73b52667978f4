"""How fast do the insight pages answer? Each chart page of the admin, with 100,000
subscribers and 20 sent editions (two million delivery rows), on PostgreSQL, through the
real web app as docker-compose.yml starts it (uvicorn, two worker processes).

    .venv/bin/python bench/insight.py                      # 100,000 subscribers, 20 editions
    .venv/bin/python bench/insight.py --subscribers 20000 --editions 5 --seconds 3

The data is seeded with SQL (INSERT … SELECT), not through the services, for speed: the
deliveries of every edition (a few bounced, deferred and failed, spread over 50 domains),
a year of consent events (sign-ups, unsubscribes by channel, some naming their edition),
bounces and complaints, and each edition's links with their clicks.

Printed per page: requests per second, p50 and p99 in ms, against ``GET /healthz`` (the
web stack alone) in the same run; and the first view of an edition before its delivery
figures are summed (what ``summarise`` at the end of a send saves the first viewer). The
target: every chart page under 200 ms.

Every figure is measured twice, in turns (``--rounds``): "after", as a send leaves its
edition (the delivery counts its finish keeps, which the alerts banner on top of every
admin page reads), and "before", with those counts removed, so that the banner counts
each watched sent edition's 100,000 deliveries on every page, as it did until then.
Figures go to bench/results/insight-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
BIN = Path(sys.executable).parent

from api import _wait, free_port  # noqa: E402  (bench/api.py: the same web app, started alike)


def load(base: str, cookies: httpx.Cookies, paths: list[str], *, clients: int,
         seconds: float) -> tuple[list[float], float]:
    """Each client asks for ``paths`` in turn for ``seconds``: every answer's time, and the
    time it all took."""
    samples: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    deadline = time.perf_counter() + seconds

    def client(n: int) -> None:
        with httpx.Client(base_url=base, cookies=cookies, timeout=30) as http:
            i = n
            while time.perf_counter() < deadline:
                path = paths[i % len(paths)]
                i += 1
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
    return [s for per in samples for s in per], elapsed


def figures_of(times: list[float], elapsed: float | None = None) -> dict[str, float]:
    every = sorted(times)
    out = {"p50_ms": round(1000 * statistics.median(every), 2),
           "p99_ms": round(1000 * every[int(0.99 * (len(every) - 1))], 2)}
    if elapsed:
        out = {"requests": len(every), "per_second": round(len(every) / elapsed, 1), **out}
    return out


#: ``edition.stats["deliveries"]`` as ``delivery.service.finish_if_done`` keeps it. Without it
#: (``FORGET_FINAL_COUNTS``), the alerts banner counts each watched sent edition's deliveries
#: on every admin page, as it did before: the bench's "before".
KEEP_FINAL_COUNTS = """
    UPDATE edition e SET stats = json_build_object('deliveries', (
        SELECT json_object_agg(state, n) FROM (
            SELECT state, count(*) AS n FROM delivery WHERE edition_id = e.id GROUP BY state
        ) AS c))
    WHERE e.id = ANY(:ids)"""
FORGET_FINAL_COUNTS = "UPDATE edition SET stats = NULL WHERE id = ANY(:ids)"


def seed(subscribers: int, editions: int) -> list[int]:
    """The list, the editions and their history, straight in SQL; the edition ids."""
    from sqlalchemy import text

    from mailer.db import transaction
    from tests.support.factories import make_edition, make_subscribers

    make_subscribers(subscribers, domains=50)
    ids = [make_edition(subject=f"Edition {n + 1}", articles=2) for n in range(editions)]
    with transaction() as session:
        run = session.execute
        # One edition a fortnight, the newest a week ago.
        for n, edition_id in enumerate(ids):
            run(text("UPDATE edition SET state = 'sent', audience_count = :a, "
                     "started_at = now() - make_interval(days => 7 + 14 * :k), "
                     "finished_at = now() - make_interval(days => 7 + 14 * :k) "
                     "+ interval '40 minutes' WHERE id = :id"),
                {"a": subscribers, "k": editions - 1 - n, "id": edition_id})
        run(text("""
            INSERT INTO delivery (edition_id, subscriber_id, state, attempts, updated_at,
                                  sent_at, smtp_code, smtp_reply, outcome)
            SELECT e.id, s.id,
                   CASE WHEN s.id % 211 = 0 THEN 'bounced' WHEN s.id % 307 = 0 THEN 'failed'
                        ELSE 'sent' END,
                   CASE WHEN s.id % 37 = 0 THEN 2 ELSE 1 END,
                   e.started_at,
                   CASE WHEN s.id % 211 = 0 OR s.id % 307 = 0 THEN NULL
                        ELSE e.started_at + make_interval(secs => (s.id % 2400)) END,
                   CASE WHEN s.id % 211 = 0 THEN 550 WHEN s.id % 307 = 0 THEN 554
                        ELSE 250 END,
                   NULL, NULL
            FROM edition e CROSS JOIN subscriber s WHERE e.id = ANY(:ids)"""), {"ids": ids})
        # What the end of each send keeps: its deliveries by state (finish_if_done).
        run(text(KEEP_FINAL_COUNTS), {"ids": ids})
        run(text("""
            INSERT INTO consent_event (subscriber_id, address_hash, kind, at, channel)
            SELECT id, address_hash, 'confirmed',
                   now() - make_interval(days => (id % 365)), NULL FROM subscriber"""))
        run(text("""
            INSERT INTO consent_event (subscriber_id, address_hash, kind, at, channel,
                                       edition_id)
            SELECT id, address_hash, 'unsubscribed', now() - make_interval(days => (id % 300)),
                   (ARRAY['link', 'one-click', 'complaint', 'api'])[1 + id % 4],
                   CASE WHEN id % 3 = 0 THEN (:ids)[1 + id % :n] END
            FROM subscriber WHERE id % 29 = 0"""), {"ids": ids, "n": len(ids)})
        run(text("""
            INSERT INTO bounce (received_at, source, bounce_class, recipient, status_code,
                                diagnostic, remote_mta, edition_id, attribution,
                                attribution_note, action, raw_excerpt, trust)
            SELECT now() - make_interval(days => (id % 300)), 'smtp',
                   (ARRAY['hard', 'soft', 'policy', 'complaint'])[1 + id % 4], '', '5.1.1',
                   '', '', (:ids)[1 + id % :n], 'verp', '', '', '', 'verified'
            FROM subscriber WHERE id % 53 = 0"""), {"ids": ids, "n": len(ids)})
        run(text("""
            INSERT INTO edition_link (edition_id, position, url, label, clicks, head_requests,
                                      scanner_clicks)
            SELECT e.id, p, 'https://www.cep-probation.org/article-' || p, 'Article ' || p,
                   (1000 / p)::int, 3, 40
            FROM edition e CROSS JOIN generate_series(1, 8) AS p WHERE e.id = ANY(:ids)"""),
            {"ids": ids})
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscribers", type=int, default=100_000)
    ap.add_argument("--editions", type=int, default=20)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0,
                    help="per page, before and after each")
    ap.add_argument("--rounds", type=int, default=2,
                    help="before and after take turns this many times")
    ap.add_argument("--web-workers", type=int, default=2)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()

    import psycopg

    from tests.support.redis_server import RedisServer

    db_name = f"mailer_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    workdir = Path(tempfile.mkdtemp(prefix="mailer-bench-insight-"))
    redis_server = RedisServer(workdir / "redis").start()
    env = {"MAILER_ENV": "test", "MAILER_SECRET_KEY": secrets.token_urlsafe(32),
           "MAILER_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
           "MAILER_REDIS_URL": redis_server.url, "MAILER_VAR_DIR": str(workdir)}
    os.environ.update(env)
    web = None
    try:
        from mailer import migrate
        from mailer.config import get_settings
        from mailer.db import dispose_engines, transaction
        from mailer.insight.editions import summarise
        from tests.support.admin import Admin, make_staff

        migrate.upgrade(get_settings().database_url)
        started = time.perf_counter()
        ids = seed(args.subscribers, args.editions)
        with psycopg.connect(args.pg.rsplit("/", 1)[0] + f"/{db_name}", autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # what autovacuum does to a database at rest
        seeded = time.perf_counter() - started
        make_staff("bench@cep.example", "viewer")
        dispose_engines()

        port = free_port()
        web = subprocess.Popen(
            [str(BIN / "uvicorn"), "--factory", "mailer.web.app:create_app", "--host",
             "127.0.0.1", "--port", str(port), "--workers", str(args.web_workers),
             "--no-access-log"],
            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
            stderr=open(workdir / "web.log", "w"))  # noqa: SIM115
        base = f"http://127.0.0.1:{port}"
        _wait(base, web)
        admin = Admin(base)
        admin.login("bench@cep.example")
        cookies = admin.http.cookies

        # The first view of an edition whose figures were not summed at the end of its send.
        began = time.perf_counter()
        assert admin.get(f"/admin/editions/{ids[-1]}/insight").status_code == 200
        cold = round(1000 * (time.perf_counter() - began), 1)
        began = time.perf_counter()
        with transaction() as session:  # what the end of each send does
            summed = sum(summarise(session, edition_id) for edition_id in ids)
        summing = round(1000 * (time.perf_counter() - began) / max(summed, 1), 1)

        # The queries alone, in this process (no HTTP, no login, no alerts banner).
        from mailer.insight.deliverability import deliverability
        from mailer.insight.editions import edition_figures
        from mailer.insight.growth import list_figures
        from mailer.web.admin.render import _banner

        def keep_final_counts(kept: bool) -> None:
            """After (the counts the end of a send keeps) or before (counted on every page)."""
            from sqlalchemy import text

            with transaction() as session:
                session.execute(text(KEEP_FINAL_COUNTS if kept else FORGET_FINAL_COUNTS),
                                {"ids": ids})

        queries = {
            "query: an edition's figures": lambda s, n: edition_figures(s, ids[n % len(ids)]),
            "query: the list over time (26 weeks)": lambda s, n: list_figures(s, 26),
            "query: deliverability (last 10)": lambda s, n: deliverability(s, 10),
            # Not insight's: the alerts every admin page shows on top (mailer.ops.alerts).
            "every admin page's alerts banner": lambda s, n: _banner(True, s),  # type: ignore[arg-type]
        }
        scenarios = {
            "GET /healthz (baseline)": ["/healthz"],
            "GET /admin/bounces (an admin page)": ["/admin/bounces"],
            "an edition's page": [f"/admin/editions/{i}/insight" for i in ids],
            "an edition's clicks CSV": [f"/admin/editions/{i}/insight/clicks.csv" for i in ids],
            "the list over time (26 weeks)": ["/admin/insight/list"],
            "the list over time (52 weeks)": ["/admin/insight/list?weeks=52"],
            "deliverability (last 10)": ["/admin/insight/deliverability"],
            f"deliverability (last {len(ids)})": [
                f"/admin/insight/deliverability?editions={len(ids)}"],
        }
        # Before and after, interleaved in rounds (the machine is shared: its load moves).
        modes = {"after": True, "before": False}
        rounds = max(1, args.rounds)
        query_times: dict[tuple[str, str], list[float]] = {}
        page_times: dict[tuple[str, str], tuple[list[float], float]] = {}
        for _ in range(rounds):
            for mode, kept in modes.items():
                keep_final_counts(kept)
                for name, run in queries.items():
                    times = query_times.setdefault((name, mode), [])
                    for n in range(max(3, int(args.seconds * 4 / rounds))):
                        began = time.perf_counter()
                        with transaction() as session:
                            run(session, n)
                        times.append(time.perf_counter() - began)
                for name, paths in scenarios.items():
                    times, elapsed = load(base, cookies, paths, clients=args.clients,
                                          seconds=args.seconds / rounds)
                    before, took = page_times.get((name, mode), ([], 0.0))
                    page_times[name, mode] = (before + times, took + elapsed)
        keep_final_counts(True)

        results: dict[str, object] = {
            "subscribers": args.subscribers, "editions": len(ids), "clients": args.clients,
            "seed_seconds": round(seeded, 1), "first_view_unsummed_ms": cold,
            "summarise_ms_per_edition": summing, "rounds": rounds}
        print(f"{args.subscribers:,} subscribers, {len(ids)} sent editions "
              f"({args.subscribers * len(ids):,} deliveries; seeded in {seeded:.1f} s), "
              f"{args.clients} clients, {args.web_workers} uvicorn workers, "
              f"{args.seconds:g} s per page and mode in {rounds} rounds")
        print(f"first view of an edition not summed yet: {cold} ms; summing one at the "
              f"end of its send: {summing} ms")
        print("after: the alerts banner reads a sent edition's kept delivery counts; before: "
              "it counts them on every page")
        print(f"{'page':40} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'before p50':>11} {'before p99':>11}")
        for name in [*queries, *scenarios]:
            if name in queries:
                after, before = (figures_of(query_times[name, m]) for m in ("after", "before"))
            else:
                after, before = (figures_of(*page_times[name, m]) for m in ("after", "before"))
            results[name] = {**after, "before": before}
            print(f"{name:40} {after.get('per_second', ''):>8} {after['p50_ms']:>8} "
                  f"{after['p99_ms']:>8} {before['p50_ms']:>11} {before['p99_ms']:>11}")
        admin.close()
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"insight-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
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


if __name__ == "__main__":
    main()
