"""How many followed links (``/r/<edition>/<link>/<signature>``) does the web app redirect
a second, and what do they cost a send that runs at the same time?

    .venv/bin/python bench/clicks.py                      # 10 s of redirects, 20,000 readers
    .venv/bin/python bench/clicks.py --seconds 20 --readers 40000

The web app is started as docker-compose.yml starts it (uvicorn, two worker processes) on
PostgreSQL and a private Redis (where the clicks are counted); the load is Postfix-free
``wrk`` (Debian's `wrk` package: a C load generator, so the client does not eat the cores
it measures), 2 threads and ``--connections`` keep-alive connections, each request a GET of
one of the edition's signed links. In one run:

- a warm-up of 2 s each, not measured: every web process's first clicks open its database
  and Redis connections and look the links up once (a few hundred ms), which a process
  that runs for days does once;
0. ``GET /healthz`` with the same load: the web stack alone (no database, no Redis), the
   baseline the redirects are read against (wrk shares the two cores with the web app, so
   its p99 is mostly the wait for a core);
1. redirects alone, as fast as they are answered: requests per second, p50 and p99 (wrk's
   latency distribution), and the CPU per answer;
   1b. redirects alone at ``--rate`` (2,000) a second: requests sent on a schedule of that
   many a second over ``--paced-connections`` connections (wrk's ``delay``, :data:`_PACE`),
   so the latency is that of a web app doing 2,000 a second, not of one flooded;
2. ``bench/send.py --readers N`` alone: its messages per second (real Celery workers,
   smtp-sink);
3. the same send again with redirects as fast as they are answered during it;
   3b. again with redirects at ``--rate`` during it: the issue's figure (2,000 a second,
   p99 under 20 ms, while a send runs);
4. again with ``/healthz`` at the same rate during it: what the send loses to serving that
   many requests at all, so that 3b against 4 is what the redirects' own work (signature,
   Redis, counting) costs it.

Then the counts are flushed from Redis to the database (as the beat task does) and checked
against the number of redirects wrk had answered: a count lost or made up fails the run
(a click is counted before its answer goes out, so the requests in flight when wrk stops, at
most one per connection in each wrk phase of redirects, may be counted and never answered).
Figures go to bench/results/clicks-<time>.json, with the load average before and after.
The machine has two cores: in phase 3 the web app and the send share them, so the send's
rate there shows what the redirects' CPU takes from it, not what counting does.

``PYTHONPATH=/other/checkout/src`` runs the same bench on another version of the web app
(the web processes inherit it): before and after, on the same machine state.
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
%s
done = function(summary, latency, requests)
  io.write(string.format("answers %%d\\n", summary.requests))
  io.write(string.format("non2xx3xx %%d\\n", summary.errors.status))
end
"""


_THREADS = 2
#: wrk's pacing (``delay``, whole milliseconds, asked before each request): each of its
#: threads keeps a schedule of one request every ``%f`` ms and holds a request until its
#: slot, on the clock (LuaJIT's FFI: wrk's Lua has none of its own). Requests whose slots
#: passed while every connection was waiting for an answer go out at once, as readers'
#: clicks would, rather than lowering the rate (a fixed wait between an answer and the
#: next request did that: the slower the answers, the fewer the requests).
_PACE = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } pace_timespec;
int clock_gettime(int clock, pace_timespec *now);
]]
local clock = ffi.new("pace_timespec")
local every = %f
local slot = nil
delay = function()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  local now = tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
  if slot == nil then slot = now end
  slot = slot + every
  if slot <= now then return 0 end
  return math.floor(slot - now)
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
        workdir: Path, measured: list[int] | None = None, rate: float = 0
        ) -> dict[str, float]:
    """wrk's figures, and with ``measured`` (process ids) the CPU those processes spent
    per answer, in microseconds. With ``rate``, requests go out on a schedule of that many
    a second (:data:`_PACE`), whatever the answers' times, as long as a connection is free
    for each: a slow answer does not lower the rate asked for."""
    cpu_before = _cpu_seconds(measured or [])
    script = workdir / "paths.lua"
    pace = _PACE % (_THREADS * 1000 / rate) if rate else ""
    script.write_text(_LUA % (", ".join(f'"{p}"' for p in paths), pace))
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    out = subprocess.run([binary, f"-t{_THREADS}", f"-c{connections}",
                          f"-d{max(1, round(seconds))}s",
                          "--latency", "-s", str(script), base],
                         check=True, capture_output=True, text=True,
                         start_new_session=True).stdout

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


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def send(readers: int, workdir: Path, name: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    started, results = workdir / f"{name}.started", workdir / f"{name}.json"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "send.py"), "--readers", str(readers),
         "--baseline-messages", "500", "--started-file", str(started),
         "--results-file", str(results)],
        stdout=open(workdir / f"{name}.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    return proc, started, results


def _with_send(args: argparse.Namespace, base: str, paths: list[str], workdir: Path,
               results: dict[str, object]) -> list[dict[str, float]]:
    """Phases 2 to 4: the send alone, then again under each load; the redirect loads."""
    proc, _, figures = send(args.readers, workdir, "send-alone")
    if proc.wait() != 0:
        raise SystemExit((workdir / "send-alone.log").read_text()[-3000:])
    send_alone = json.loads(figures.read_text())
    seconds = float(send_alone["end_to_end_seconds"])
    alone_rate = float(send_alone["messages_per_second"])
    results["send_alone_per_second"] = alone_rate
    print(f"2. the send alone            {alone_rate:>8} msg/s ({seconds:.1f} s)")

    loads = []
    for phase, key, name, load_paths, rate, connections in (
            ("3.", "redirects_flat_out", "redirects, flat out", paths, 0.0, args.connections),
            ("3b.", "redirects_paced", f"redirects at {args.rate:,.0f}/s", paths, args.rate,
             args.paced_connections),
            ("4.", "healthz_paced", f"/healthz at {args.rate:,.0f}/s", ["/healthz"],
             args.rate, args.paced_connections)):
        load, send_during = _send_under(base, load_paths, workdir, seconds, args.readers,
                                        rate=rate, connections=connections)
        key = f"{key}_during_send"
        rate_during = float(send_during["messages_per_second"])
        results[key] = {**load, "send_per_second": rate_during}
        if load_paths is paths:
            loads.append(load)
        print(f"{phase:<4}{name:<25} {load['per_second']:>8}/s  p50 {load['p50_ms']} ms  "
              f"p99 {load['p99_ms']} ms; the send meanwhile {rate_during} msg/s "
              f"({rate_during / alone_rate:.0%} of phase 2)")
    redirects = results["redirects_paced_during_send"]
    health = results["healthz_paced_during_send"]
    assert isinstance(redirects, dict) and isinstance(health, dict)
    print(f"   at the same load the send went {redirects['send_per_second']} msg/s under "
          f"redirects and {health['send_per_second']} under /healthz "
          f"({redirects['send_per_second'] / health['send_per_second'] - 1:+.1%}): what the "
          "counting costs it")
    return loads


def _send_under(base: str, paths: list[str], workdir: Path, seconds: float, readers: int,
                *, rate: float, connections: int) -> tuple[dict[str, float], dict[str, Any]]:
    """bench/send.py again, with wrk on ``paths`` for about as long as it takes."""
    name = f"send-{len(list(workdir.glob('send-*.log')))}"
    proc, started, figures = send(readers, workdir, name)
    while not started.exists():
        if proc.poll() is not None:
            raise SystemExit((workdir / f"{name}.log").read_text()[-3000:])
        time.sleep(0.05)
    load = wrk(base, paths, seconds=max(2.0, 0.9 * seconds), connections=connections,
               workdir=workdir, rate=rate)
    if proc.wait() != 0:
        raise SystemExit((workdir / f"{name}.log").read_text()[-3000:])
    return load, json.loads(figures.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="of redirects, phase 1")
    ap.add_argument("--readers", type=int, default=20_000, help="of the send, phases 2 and 3")
    ap.add_argument("--connections", type=int, default=32, help="flat out")
    ap.add_argument("--rate", type=float, default=2000.0, help="redirects a second, paced")
    ap.add_argument("--paced-connections", type=int, default=64)
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
            env={**os.environ, **env}, stdout=subprocess.DEVNULL, start_new_session=True,
            stderr=open(workdir / "web.log", "w"))  # noqa: SIM115
        base = f"http://127.0.0.1:{port}"
        _wait(base, web)
        first = httpx.get(base + paths[0])
        assert first.status_code == 303, first.text

        print(f"{LINKS} links of one edition, wrk -t2 -c{args.connections} flat out or "
              f"-c{args.paced_connections} at {args.rate:,.0f}/s, {args.web_workers} uvicorn "
              f"workers; send of {args.readers:,} readers; load average {_load()}")
        results["load_average_before"] = _load()
        loads = [wrk(base, paths, seconds=2, connections=args.connections, workdir=workdir)]
        wrk(base, ["/healthz"], seconds=2, connections=args.connections, workdir=workdir)
        measured = [web.pid] + ([redis_server.proc.pid] if redis_server.proc else [])
        baseline = wrk(base, ["/healthz"], seconds=args.seconds,
                       connections=args.connections, workdir=workdir, measured=measured)
        results["healthz_baseline"] = baseline
        print(f"0.  /healthz, the baseline    {baseline['per_second']:>8}/s  "
              f"p50 {baseline['p50_ms']} ms  p99 {baseline['p99_ms']} ms  "
              f"{baseline['cpu_us_per_answer']} µs CPU each (web and Redis)")
        alone = wrk(base, paths, seconds=args.seconds, connections=args.connections,
                    workdir=workdir, measured=measured)
        results["redirects_alone"] = alone
        print(f"1.  redirects alone           {alone['per_second']:>8}/s  "
              f"p50 {alone['p50_ms']} ms  p99 {alone['p99_ms']} ms  "
              f"{alone['cpu_us_per_answer']} µs CPU each "
              f"({alone['per_second'] / baseline['per_second']:.0%} of /healthz's rate)")
        paced = wrk(base, paths, seconds=args.seconds, connections=args.paced_connections,
                    workdir=workdir, measured=measured, rate=args.rate)
        results["redirects_alone_paced"] = paced
        print(f"1b. redirects at {args.rate:,.0f}/s       {paced['per_second']:>8}/s  "
              f"p50 {paced['p50_ms']} ms  p99 {paced['p99_ms']} ms  "
              f"{paced['cpu_us_per_answer']} µs CPU each")
        loads += [alone, paced]
        if not args.redirects_only:
            loads += _with_send(args, base, paths, workdir, results)

        counting.flush(get_redis())
        with transaction() as session:
            counted, scanners = session.execute(
                select(func.sum(EditionLink.clicks), func.sum(EditionLink.scanner_clicks))
                .where(EditionLink.edition_id == edition_id)).one()
        # httpx's first request above is a program's: counted apart, as a scanner's.
        answered = sum(int(load["answers"]) for load in loads)
        results["clicks_counted"], results["redirects_answered"] = counted, answered
        print(f"counted {counted:,} clicks for {answered:,} redirects answered; "
              f"load average {_load()}")
        results["load_average_after"] = _load()
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"clicks-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
            json.dumps(results, indent=2))
        # when each wrk phase of redirects stopped
        in_flight = len(loads) * max(args.connections, args.paced_connections)
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
