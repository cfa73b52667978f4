"""How fast does an edition go out, and what does each message cost? End to end, through
real Celery workers (started with Procfile.dev's command line) and a real Redis, to
Postfix's smtp-sink on loopback, with PostgreSQL — and, in the same run, the two
baselines: Postfix's own smtp-source (C) and a bare smtplib loop reusing one connection.

    .venv/bin/python bench/send.py                       # 10,000 readers, 4 processes
    .venv/bin/python bench/send.py --readers 100000
    .venv/bin/python bench/send.py --readers 1000000     # the freeze and memory at scale

Prints:
- messages per second end to end (from the send command to the last delivery recorded),
  and as a ratio to each baseline;
- CPU per message of every process that works for the send, read from /proc: the workers
  (main processes and their children), the PostgreSQL backends of the bench's database,
  smtp-sink and the bench's own Redis server;
- how long starting the send takes (the snapshot, the audience freeze, the queueing) and
  the audience freeze on its own;
- the worker processes' memory when 10,000 messages have gone and at the end;
- PostgreSQL tuples read per message and the send rate in the first and last tenth of the
  send (a per-batch cost that grows with the list shows as a slower last tenth).
Figures go to bench/results/send-<time>.json too. The machine is shared: compare figures
within one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FEED = ROOT / "tests" / "fixtures" / "cep-feed.xml"  # a copy of shared/fixtures/cep-feed.xml
BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    # -u: the user to run as when started by root; backlog 256.
    proc = subprocess.Popen([sink, "-u", "nobody", f"127.0.0.1:{port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=2).quit()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("smtp-sink did not start; is the postfix package installed?")


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    for _ in range(100):
        try:
            redis.Redis(port=port).ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def smtp_source_rate(port: int, messages: int, size: int, sessions: int) -> float:
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    t0 = time.perf_counter()
    subprocess.run([source, "-s", str(sessions), "-m", str(messages), "-l", str(size),
                    "-f", "bench@example.org", "-t", "reader@example.net", f"127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return messages / (time.perf_counter() - t0)


def smtplib_rate(port: int, messages: int, payload: bytes) -> float:
    conn = smtplib.SMTP("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    for i in range(messages):
        conn.sendmail("bench@example.org", [f"reader{i}@example.net"], payload)
    rate = messages / (time.perf_counter() - t0)
    conn.quit()
    return rate


# --- /proc ------------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of one process (its own, not its children's), in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def proc_status(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    kids = [int(x) for x in out.stdout.split()]
    return kids + [g for k in kids for g in descendants(k)]


class CPUMeter:
    """CPU used during the send by groups of processes, sampled every half second so that
    processes that come and go (a PostgreSQL backend, a replaced pool process) count too."""

    def __init__(self, groups: dict[str, object]) -> None:
        self.groups = groups  # name -> callable returning the pids of that group now
        self.first: dict[tuple[str, int], int] = {}
        self.last: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        for name, pids in self.groups.items():
            for pid in pids():  # type: ignore[operator]
                ticks = cpu_ticks(pid)
                if ticks is None:
                    continue
                self.first.setdefault((name, pid), ticks)
                self.last[(name, pid)] = ticks

    def start(self) -> CPUMeter:
        self.sample()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.sample()
        used: dict[str, float] = {name: 0.0 for name in self.groups}
        for key, ticks in self.last.items():
            used[key[0]] += (ticks - self.first[key]) / TICK
        return used


# --- the run ------------------------------------------------------------------------------------


def worker_argv(concurrency: int) -> list[str]:
    """Procfile.dev's worker command, with the number of processes asked for."""
    from tests.support.processes import procfile_command

    argv = procfile_command("worker")
    if "--concurrency" in argv:
        argv[argv.index("--concurrency") + 1] = str(concurrency)
    return argv


def make_readers(n: int) -> None:
    from sqlalchemy import insert, text

    from mailer.db import transaction, utcnow
    from mailer.subscribers.models import Subscriber

    now = utcnow()
    with transaction() as session:
        for start in range(0, n, 10_000):
            rows = []
            for i in range(start, min(n, start + 10_000)):
                email = f"reader{i:07d}@d{i % 50}.example.net"
                rows.append({
                    "public_id": secrets.token_hex(16), "email": email, "email_key": email,
                    "address_hash": hashlib.sha256(email.encode()).hexdigest(),
                    "first_name": f"Reader{i}", "last_name": "", "organisation": "",
                    "country": "", "source": "bench",
                    "created_at": now, "updated_at": now,
                })
            session.execute(insert(Subscriber), rows)
        # Every reader confirmed on the first list (migration 0016's).
        session.execute(text(
            "INSERT INTO subscription (subscriber_id, list_id, status, created_at, updated_at, "
            "confirmed_at) SELECT id, 1, 'confirmed', created_at, updated_at, created_at "
            "FROM subscriber ORDER BY id"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readers", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1, help="worker main processes")
    ap.add_argument("--concurrency", type=int, default=4, help="prefork processes per worker")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--baseline-messages", type=int, default=5000)
    ap.add_argument("--stop-after", type=int, default=0, metavar="N",
                    help="cancel the send once N messages went out (a million-reader freeze "
                         "and memory check without waiting for all of it)")
    ap.add_argument("--results-file", type=Path, metavar="PATH",
                    help="also write the figures to PATH (JSON)")
    ap.add_argument("--started-file", type=Path, metavar="PATH",
                    help="write PATH once the send has started (bench/clicks.py waits for it)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra MAILER_* setting for the workers (repeatable)")
    args = ap.parse_args()

    import psycopg

    db_name = f"mailer_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    port, redis_port = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    env = {
        "MAILER_ENV": "test",
        "MAILER_SECRET_KEY": secrets.token_urlsafe(32),
        "MAILER_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
        "MAILER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MAILER_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "MAILER_BATCH_SIZE": str(args.batch_size),
        "MAILER_BASE_URL": "https://news.cep-probation.example.org",
        **dict(item.split("=", 1) for item in args.env),
    }
    os.environ.update(env)
    os.environ["PGAPPNAME"] = "mailer-bench"  # so that its own backends are not counted
    sink = start_sink(port)
    redis_server = start_redis(redis_port, workdir)
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, object] = {"readers": args.readers, "workers": args.workers,
                                  "concurrency": args.concurrency, "batch_size": args.batch_size,
                                  "worker_command": " ".join(worker_argv(args.concurrency)[1:])}
    try:
        from sqlalchemy import func, select

        from mailer import migrate
        from mailer.articles import feeds
        from mailer.articles.importer import import_feed
        from mailer.config import ArticleSettings, IdentitySettings, get_settings
        from mailer.counters import smtp_figures
        from mailer.db import transaction, utcnow
        from mailer.deliveries.models import Delivery
        from mailer.delivery import service as sending
        from mailer.editions import service as editions
        from mailer.editions.models import Edition

        migrate.upgrade(get_settings().database_url)
        make_readers(args.readers)
        with transaction() as session:
            feed = feeds.load(str(FEED), ArticleSettings(),
                              website_url=IdentitySettings().website_url)
            import_feed(session, feed)
            window_start = utcnow() - dt.timedelta(days=3650)
            identity = get_settings().identity
            edition = editions.draft_edition(session, identity=identity,
                                             subject="CEP Newsletter – benchmark",
                                             window_start=window_start, by="bench")
            edition_id = edition.id
            probe = editions.draft_edition(session, identity=identity, subject="probe",
                                           window_start=window_start, by="bench")
            probe_id = probe.id
        with psycopg.connect(args.pg.rsplit("/", 1)[0] + f"/{db_name}", autocommit=True) as c:
            c.execute("VACUUM ANALYZE")

        # The audience freeze, timed on its own (same statement, rolled back).
        freeze_times = []
        for _ in range(3 if args.readers <= 100_000 else 1):
            with transaction() as session:
                t0 = time.perf_counter()
                sending._freeze_audience(session, session.get(Edition, probe_id), get_settings())
                freeze_times.append(time.perf_counter() - t0)
                session.rollback()
        results["freeze_seconds"] = round(statistics.median(freeze_times), 3)

        (ROOT / "var").mkdir(exist_ok=True)
        for n in range(args.workers):
            with open(ROOT / "var" / f"bench-worker-{n}.log", "wb") as log:
                argv = worker_argv(args.concurrency)
                argv[0] = str(BIN / "celery")
                if args.workers > 1:  # several on one machine need names of their own
                    argv += ["-n", f"bench{n}@%h"]
                worker_env = {k: v for k, v in {**os.environ, **env}.items() if k != "PGAPPNAME"}
                procs.append(subprocess.Popen(
                    argv, env=worker_env, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT)))
        time.sleep(6)  # workers up and connected

        def worker_pids() -> list[int]:
            return [pid for p in procs for pid in (p.pid, *descendants(p.pid))]

        def backend_pids() -> list[int]:
            """The backends serving the workers (the bench's own connections are named)."""
            with psycopg.connect(args.pg, autocommit=True) as c:
                rows = c.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                                 "AND application_name <> 'mailer-bench'", (db_name,)).fetchall()
            return [int(r[0]) for r in rows]

        def tuples_read() -> int:
            with psycopg.connect(args.pg, autocommit=True) as c:
                row = c.execute("SELECT tup_returned + tup_fetched FROM pg_stat_database "
                                "WHERE datname = %s", (db_name,)).fetchone()
            return int(row[0]) if row else 0

        def table_reads() -> dict[str, int]:
            """Rows read per table by sequential scans and index entries read per index."""
            url = args.pg.rsplit("/", 1)[0] + f"/{db_name}"
            with psycopg.connect(url, autocommit=True) as c:
                seq = c.execute("SELECT relname, seq_tup_read FROM pg_stat_user_tables").fetchall()
                idx = c.execute("SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes"
                                ).fetchall()
            return {**{f"seq {r}": int(n or 0) for r, n in seq},
                    **{f"index {r}": int(n or 0) for r, n in idx}}

        meter = CPUMeter({"workers": worker_pids, "postgres": backend_pids,
                          "smtp_sink": lambda: [sink.pid, *descendants(sink.pid)],
                          "redis": lambda: [redis_server.pid]}).start()
        tuples_before = tuples_read()
        reads_before = table_reads()
        t0 = time.perf_counter()
        started_at = utcnow()
        with transaction() as session:
            audience = sending.start_send(session, edition_id, by="bench", settings=get_settings())
        results["start_send_seconds"] = round(time.perf_counter() - t0, 3)
        if args.started_file:
            args.started_file.write_text(str(os.getpid()))
        assert audience == args.readers
        results["audience"] = audience
        rss_at_10k: dict[str, int] | None = None
        stopped = False
        while True:
            # Watching costs the database nothing that grows: the edition's state, and the
            # workers' own count of messages sent (in Redis).
            if rss_at_10k is None and args.readers > 10_000 and \
                    smtp_figures()["sent"] >= 10_000:
                rss_at_10k = {str(p): proc_status(p, "VmRSS") for p in worker_pids()}
            if args.stop_after and not stopped and smtp_figures()["sent"] >= args.stop_after:
                with transaction() as session:
                    sending.cancel(session, edition_id, by="bench")
                stopped = True
                time.sleep(2)  # the batches under way stop at their next group
            with transaction() as session:
                state = session.scalar(select(Edition.state).where(Edition.id == edition_id))
                if state in ("sent", "cancelled"):
                    last = session.scalar(select(func.max(Delivery.sent_at))
                                          .where(Delivery.edition_id == edition_id))
                    counts = sending.state_counts(session, edition_id)
                    break
            time.sleep(0.2)
            if time.perf_counter() - t0 > 7200:
                raise RuntimeError("the send did not finish in two hours")
        cpu = meter.stop()
        tuples_after = tuples_read()
        elapsed = (last - started_at).total_seconds()
        n = counts.get("sent", 0)  # all the readers, unless --stop-after cancelled the rest
        results["end_to_end_seconds"] = round(elapsed, 2)
        results["messages_sent"] = n
        results["messages_per_second"] = round(n / elapsed, 1)
        results["deliveries"] = counts
        results["cpu_ms_per_message"] = round(1000 * sum(cpu.values()) / n, 3)
        results["cpu_ms_per_message_by_process"] = {k: round(1000 * v / n, 3)
                                                    for k, v in cpu.items()}
        results["pg_tuples_read_per_message"] = round((tuples_after - tuples_before) / n, 1)
        reads_after = table_reads()
        results["pg_reads_per_message"] = {
            k: round((v - reads_before.get(k, 0)) / n, 1) for k, v in reads_after.items()
            if (v - reads_before.get(k, 0)) / n >= 0.5}
        results["rate_first_and_last_tenth"] = tenths_rate(edition_id)
        rss_end = {str(p): proc_status(p, "VmRSS") for p in worker_pids()}
        if rss_at_10k is not None:
            results["worker_rss_mib_at_10000_sent"] = {k: round(v / 1024, 1)
                                                       for k, v in rss_at_10k.items()}
        results["worker_rss_mib_at_end"] = {k: round(v / 1024, 1) for k, v in rss_end.items()}
        results["worker_peak_rss_mib"] = {str(p): round(proc_status(p, "VmHWM") / 1024, 1)
                                          for p in worker_pids()}

        # The baselines, against the same sink, in the same run.
        with transaction() as session:
            edition = session.get(Edition, edition_id)
            from mailer.config import get_settings
            from mailer.delivery.assembly import Reader
            from mailer.delivery.sender import assembler_for

            payload = assembler_for(edition, get_settings()).build(
                Reader(1, "reader@example.net", "Reader", secrets.token_hex(16)))
        results["message_bytes"] = len(payload)
        results["smtplib_one_connection_per_second"] = round(
            smtplib_rate(port, args.baseline_messages, payload), 1)
        results["smtp_source_per_second"] = round(smtp_source_rate(
            port, args.baseline_messages * 2, len(payload), args.workers * args.concurrency), 1)
        rate = float(results["messages_per_second"])  # type: ignore[arg-type]
        smtplib_rate_ = float(results["smtplib_one_connection_per_second"])  # type: ignore[arg-type]
        source_rate = float(results["smtp_source_per_second"])  # type: ignore[arg-type]
        results["ratio_to_smtplib"] = round(rate / smtplib_rate_, 2)
        results["ratio_to_smtp_source"] = round(rate / source_rate, 2)
        results["load_average"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    finally:
        stop_stack(procs, sink, redis_server, workdir, args.pg, db_name)
    report(results, "send")
    if args.results_file:
        args.results_file.write_text(json.dumps(results, indent=2))


def stop_stack(procs: list[subprocess.Popen[bytes]], sink: subprocess.Popen[bytes],
               redis_server: subprocess.Popen[bytes], workdir: Path, pg: str,
               db_name: str) -> None:
    """Stop what a run started: the workers (their process groups), smtp-sink, its Redis,
    its folder, and drop its PostgreSQL database."""
    import psycopg

    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(p.pid, signal.SIGKILL)
    sink.terminate()
    redis_server.kill()
    redis_server.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)
    from mailer.db import dispose_engines

    dispose_engines()
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def report(results: dict[str, object], name: str) -> None:
    """Print the figures, one a line, and keep them in bench/results/<name>-<time>.json."""
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
        json.dumps(results, indent=2))


def tenths_rate(edition_id: int) -> list[float]:
    """Messages per second over the first and the last tenth of the deliveries sent."""
    from sqlalchemy import select

    from mailer.db import transaction
    from mailer.deliveries.models import Delivery

    with transaction() as session:
        times = sorted(t for t in session.scalars(
            select(Delivery.sent_at).where(Delivery.edition_id == edition_id,
                                           Delivery.sent_at.is_not(None))) if t is not None)
    tenth = max(2, len(times) // 10)
    out = []
    for part in (times[:tenth], times[-tenth:]):
        span = (part[-1] - part[0]).total_seconds()
        out.append(round(len(part) / span, 1) if span > 0 else 0.0)
    return out


if __name__ == "__main__":
    main()
