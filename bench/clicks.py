"""How many followed links (``/r/<edition>/<link>/<signature>``) does the web app redirect
a second, and what do they cost a send that runs at the same time?

    .venv/bin/python bench/clicks.py                      # 10 s of redirects, 20,000 readers
    .venv/bin/python bench/clicks.py --seconds 20 --readers 40000

The web app is started as docker-compose.yml starts it (uvicorn, two worker processes) on
PostgreSQL and a private Redis (where the clicks are counted); the load is Postfix-free
``wrk`` (Debian's `wrk` package: a C load generator, so the client does not eat the cores
it measures), 2 threads and ``--connections`` keep-alive connections, each request a GET of
one of the edition's signed links. Five phases, in one run:

0. ``GET /healthz`` with the same load: the web stack alone (no database, no Redis), the
   baseline the redirects are read against (wrk shares the two cores with the web app, so
   its p99 is mostly the wait for a core);
1. redirects alone: requests per second, p50 and p99 (wrk's latency distribution);
2. ``bench/send.py --readers N`` alone: its messages per second (real Celery workers,
   smtp-sink);
3. the same send again with redirects during it: both figures again;
4. the same send again with ``/healthz`` under the same load during it: what the send
   loses to the web stack alone, so that 3 against 4 is what the redirects' own work
   (signature, Redis, counting) costs it.

Then the counts are flushed from Redis to the database (as the beat task does) and checked
against the number of redirects wrk had answered: a count lost or made up fails the run
(a click is counted before its answer goes out, so the requests in flight when wrk stops, at
most one per connection in each of the two wrk phases, may be counted and never answered).
Figures go to bench/results/clicks-<time>.json. The machine has two cores: in phase 3 the
web app and the send share them, so the send's rate there shows what the redirects' CPU
takes from it, not what counting does (counting is one Redis script call per click, which
also finds the link's destination).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
LINKS = 8

_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_LUA = """
local paths = {%s}
local i = 0
-- a reader's browser: a client without one is counted as a link scanner, apart
local headers = {["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0"}
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], headers)
end
done = function(summary, latency, requests)
  io.write(string.format("answers %%d\\n", summary.requests))
  io.write(string.format("non2xx3xx %%d\\n", summary.errors.status))
end
"""


def _cpu_seconds(root_pids: list[int]) -> float:
    """User and system CPU of these processes and their children (/proc): what the web
    app (and its Redis) spent, whatever else the machine was doing meanwhile."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / tick
    wanted, grew = set(root_pids), True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in wanted} - wanted
        wanted |= more
        grew = bool(more)
    return sum(times.get(pid, 0.0) for pid in wanted)


def wrk(base: str, paths: list[str], *, seconds: float, connections: int,
        workdir: Path, measured: list[int] | None = None) -> dict[str, float]:
    """wrk's figures, and with ``measured`` (process ids) the CPU those processes spent
    per answer, in microseconds."""
    cpu_before = _cpu_seconds(measured or [])
    script = workdir / "paths.lua"
    script.write_text(_LUA % ", ".join(f'"{p}"' for p in paths))
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    out = subprocess.run([binary, "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          "--latency", "-s", str(script), base],
                         check=True, capture_output=True, text=True).stdout

    def latency(percent: str) -> float:
        value, unit = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return round(float(value) * _UNIT[unit], 2)

    bad = int(re.search(r"^non2xx3xx (\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    if bad or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    answers = int(re.search(r"^answers (\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    cpu = _cpu_seconds(measured or []) - cpu_before
    return {"answers": answers,
            "per_second": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), 1),  # type: ignore[union-attr]
            "p50_ms": latency("50"), "p99_ms": latency("99"),
            "cpu_us_per_answer": round(cpu / max(answers, 1) * 1e6)}


def send(readers: int, workdir: Path, name: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    started, results = workdir / f"{name}.started", workdir / f"{name}.json"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "send.py"), "--readers", str(readers),
         "--baseline-messages", "500", "--started-file", str(started),
         "--results-file", str(results)],
        stdout=open(workdir / f"{name}.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    return proc, started, results


def _with_send(args: argparse.Namespace, base: str, paths: list[str], workdir: Path,
               results: dict[str, object]) -> dict[str, float]:
    """Phases 2 and 3: the send alone, then again with redirects during it."""
    proc, _, figures = send(args.readers, workdir, "send-alone")
    if proc.wait() != 0:
        raise SystemExit((workdir / "send-alone.log").read_text()[-3000:])
    send_alone = json.loads(figures.read_text())
    seconds = float(send_alone["end_to_end_seconds"])
    results["send_alone_per_second"] = send_alone["messages_per_second"]
    print(f"2. the send alone            {send_alone['messages_per_second']:>8} msg/s "
          f"({seconds:.1f} s)")

    during, send_during = _send_under(args, base, paths, workdir, "send-with-redirects",
                                      seconds)
    results["redirects_during_send"] = during
    results["send_with_redirects_per_second"] = send_during["messages_per_second"]
    print(f"3. redirects during the send {during['per_second']:>8}/s  "
          f"p50 {during['p50_ms']} ms  p99 {during['p99_ms']} ms")
    share = float(send_during["messages_per_second"]) / float(
        send_alone["messages_per_second"])
    print(f"   the send meanwhile        {send_during['messages_per_second']:>8} msg/s "
          f"({share:.0%} of phase 2)")

    # The same web load without the clicks: what the send loses to the redirects' own work
    # (signature, Redis, counting) is the difference between phases 3 and 4.
    health, send_health = _send_under(args, base, ["/healthz"], workdir, "send-with-healthz",
                                      seconds)
    results["healthz_during_send"] = health
    results["send_with_healthz_per_second"] = send_health["messages_per_second"]
    print(f"4. /healthz during the send  {health['per_second']:>8}/s  "
          f"p50 {health['p50_ms']} ms  p99 {health['p99_ms']} ms")
    # wrk sends as fast as it is answered, so the two loads differ: compare what each
    # answer a second took from the send.
    alone_rate = float(send_alone["messages_per_second"])
    per_redirect = (alone_rate - float(send_during["messages_per_second"])) / max(
        during["per_second"], 1.0)
    per_health = (alone_rate - float(send_health["messages_per_second"])) / max(
        health["per_second"], 1.0)
    results["send_lost_per_redirect"] = round(per_redirect, 3)
    results["send_lost_per_healthz"] = round(per_health, 3)
    print(f"   the send meanwhile        {send_health['messages_per_second']:>8} msg/s")
    print(f"   messages a second the send lost per answer a second: {per_redirect:.2f} per "
          f"redirect, {per_health:.2f} per /healthz ({per_redirect / max(per_health, 1e-9):.1f}×)")

    return during


def _send_under(args: argparse.Namespace, base: str, paths: list[str], workdir: Path,
                name: str, seconds: float) -> tuple[dict[str, float], dict[str, Any]]:
    """bench/send.py again, with wrk on ``paths`` for about as long as it takes."""
    proc, started, figures = send(args.readers, workdir, name)
    while not started.exists():
        if proc.poll() is not None:
            raise SystemExit((workdir / f"{name}.log").read_text()[-3000:])
        time.sleep(0.05)
    load = wrk(base, paths, seconds=max(2.0, 0.9 * seconds), connections=args.connections,
               workdir=workdir)
    if proc.wait() != 0:
        raise SystemExit((workdir / f"{name}.log").read_text()[-3000:])
    return load, json.loads(figures.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="of redirects, phase 1")
    ap.add_argument("--readers", type=int, default=20_000, help="of the send, phases 2 and 3")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--redirects-only", action="store_true",
                    help="phases 0 and 1 only (no send)")
    ap.add_argument("--web-workers", type=int, default=2,
                    help="uvicorn processes (docker-compose.yml runs 2)")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()

    import psycopg

    from tests.support.redis_server import RedisServer

    db_name = f"mailer_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    workdir = Path(tempfile.mkdtemp(prefix="mailer-bench-clicks-"))
    redis_server = RedisServer(workdir / "redis").start()
    env = {"MAILER_ENV": "test", "MAILER_SECRET_KEY": secrets.token_urlsafe(32),
           "MAILER_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
           "MAILER_REDIS_URL": redis_server.url, "MAILER_VAR_DIR": str(workdir)}
    os.environ.update(env)
    web = None
    results: dict[str, object] = {"connections": args.connections,
                                  "web_workers": args.web_workers, "readers": args.readers}
    try:
        from sqlalchemy import func, insert, select, update

        from mailer import migrate
        from mailer.clicks import counting, links
        from mailer.clicks.models import EditionLink
        from mailer.db import dispose_engines, transaction
        from mailer.editions.models import Edition
        from mailer.redis import get_redis
        from tests.support.factories import make_edition

        migrate.upgrade(env["MAILER_DATABASE_URL"])
        edition_id = make_edition()
        with transaction() as session:
            session.execute(insert(EditionLink), [
                {"edition_id": edition_id, "position": n, "label": f"Article {n}",
                 "url": f"https://www.cep-probation.org/news/article-{n}/"}
                for n in range(1, LINKS + 1)])
            # Its send under way: its links are its snapshot's for good.
            session.execute(update(Edition).where(Edition.id == edition_id)
                            .values(state="sending"))
        dispose_engines()
        keys = [env["MAILER_SECRET_KEY"].encode()]  # the web server's, as its settings read it
        paths = [links.tracked_url("", edition_id, n, keys=keys) for n in range(1, LINKS + 1)]

        from bench.api import _wait, free_port

        port = free_port()
        web = subprocess.Popen(
            [str(BIN / "uvicorn"), "--factory", "mailer.web.app:create_app", "--host",
             "127.0.0.1", "--port", str(port), "--workers", str(args.web_workers)],
            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
            stderr=open(workdir / "web.log", "w"))  # noqa: SIM115
        base = f"http://127.0.0.1:{port}"
        _wait(base, web)
        first = httpx.get(base + paths[0])
        assert first.status_code == 303, first.text

        print(f"{LINKS} links of one edition, wrk -t2 -c{args.connections}, "
              f"{args.web_workers} uvicorn workers; send of {args.readers:,} readers")
        measured = [web.pid] + ([redis_server.proc.pid] if redis_server.proc else [])
        baseline = wrk(base, ["/healthz"], seconds=args.seconds,
                       connections=args.connections, workdir=workdir, measured=measured)
        results["healthz_baseline"] = baseline
        print(f"0. /healthz, the baseline    {baseline['per_second']:>8}/s  "
              f"p50 {baseline['p50_ms']} ms  p99 {baseline['p99_ms']} ms  "
              f"{baseline['cpu_us_per_answer']} µs CPU each (web and Redis)")
        alone = wrk(base, paths, seconds=args.seconds, connections=args.connections,
                    workdir=workdir, measured=measured)
        results["redirects_alone"] = alone
        print(f"1. redirects alone           {alone['per_second']:>8}/s  "
              f"p50 {alone['p50_ms']} ms  p99 {alone['p99_ms']} ms  "
              f"{alone['cpu_us_per_answer']} µs CPU each "
              f"({alone['per_second'] / baseline['per_second']:.0%} of /healthz's rate)")

        during: dict[str, float] = {"answers": 0}
        if not args.redirects_only:
            during = _with_send(args, base, paths, workdir, results)

        counting.flush(get_redis())
        with transaction() as session:
            counted, scanners = session.execute(
                select(func.sum(EditionLink.clicks), func.sum(EditionLink.scanner_clicks))
                .where(EditionLink.edition_id == edition_id)).one()
        # httpx's first request above is a program's: counted apart, as a scanner's.
        answered = alone["answers"] + during["answers"]
        results["clicks_counted"], results["redirects_answered"] = counted, answered
        print(f"counted {counted:,} clicks for {answered:,} redirects answered")
        results["load_average"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"clicks-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
            json.dumps(results, indent=2))
        in_flight = (1 if args.redirects_only else 2) * args.connections  # when wrk stopped
        if not answered <= counted <= answered + in_flight or scanners != 1:
            raise SystemExit(f"{answered} redirects but {counted} clicks counted "
                             f"(and {scanners} scanner fetches for 1)")
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
