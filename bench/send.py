"""How fast does an edition go out? End to end, through real Celery workers and Redis, to
Postfix's smtp-sink on loopback, with PostgreSQL — and, in the same run, the two baselines:
Postfix's own smtp-source (C) and a bare smtplib loop reusing one connection.

    .venv/bin/python bench/send.py                 # 10,000 readers
    .venv/bin/python bench/send.py --readers 100000
    .venv/bin/python bench/send.py --concurrency 4 --workers 1

Prints messages per second end to end (from the send command to the last delivery
recorded), the time to freeze the audience, each worker process's peak memory, and our rate
as a ratio to each baseline. Figures go to bench/results/send-<time>.json too.
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
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FEED = ROOT / "tests" / "fixtures" / "cep-feed.xml"  # a copy of shared/fixtures/cep-feed.xml
BIN = Path(sys.executable).parent


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


def peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readers", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1, help="worker main processes")
    ap.add_argument("--concurrency", type=int, default=2, help="prefork processes per worker")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis-db", type=int, default=12)
    ap.add_argument("--baseline-messages", type=int, default=5000)
    args = ap.parse_args()

    import psycopg

    db_name = f"mailer_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    port = free_port()
    env = {
        "MAILER_ENV": "test",
        "MAILER_SECRET_KEY": secrets.token_urlsafe(32),
        "MAILER_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
        "MAILER_REDIS_URL": f"redis://127.0.0.1:6379/{args.redis_db}",
        "MAILER_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "MAILER_BATCH_SIZE": str(args.batch_size),
        "MAILER_BASE_URL": "https://news.cep-probation.example.org",
    }
    os.environ.update(env)
    sink = start_sink(port)
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, object] = {"readers": args.readers, "workers": args.workers,
                                  "concurrency": args.concurrency, "batch_size": args.batch_size}
    try:
        from sqlalchemy import func, insert, select

        from mailer import migrate
        from mailer.articles import feeds
        from mailer.articles.importer import import_feed
        from mailer.db import transaction, utcnow
        from mailer.delivery import service
        from mailer.delivery.models import Delivery
        from mailer.editions import service as editions
        from mailer.editions.models import Edition
        from mailer.redis import get_redis
        from mailer.subscribers.models import Subscriber

        get_redis().flushdb()
        migrate.upgrade()
        now = utcnow()
        rows = []
        for i in range(args.readers):
            email = f"reader{i:06d}@d{i % 50}.example.net"
            rows.append({
                "public_id": secrets.token_hex(16), "email": email, "email_key": email,
                "address_hash": hashlib.sha256(email.encode()).hexdigest(),
                "first_name": f"Reader{i}", "last_name": "", "organisation": "", "country": "",
                "status": "confirmed", "source": "bench", "created_at": now, "updated_at": now,
                "confirmed_at": now,
            })
        with transaction() as session:
            for start in range(0, len(rows), 10_000):
                session.execute(insert(Subscriber), rows[start:start + 10_000])
        del rows
        with transaction() as session:
            import_feed(session, feeds.load(str(FEED)))
            window_start = utcnow() - dt.timedelta(days=3650)
            edition = editions.draft_edition(session, subject="CEP Newsletter – benchmark",
                                             window_start=window_start, by="bench")
            edition_id = edition.id
            probe = editions.draft_edition(session, subject="probe", window_start=window_start,
                                           by="bench")
            probe_id = probe.id

        # The audience freeze, timed on its own (same statement, rolled back).
        freeze_times = []
        for _ in range(3):
            with transaction() as session:
                t0 = time.perf_counter()
                service._freeze_audience(session, session.get(Edition, probe_id))
                freeze_times.append(time.perf_counter() - t0)
                session.rollback()
        results["freeze_seconds"] = round(statistics.median(freeze_times), 3)

        (ROOT / "var").mkdir(exist_ok=True)
        for n in range(args.workers):
            with open(ROOT / "var" / f"bench-worker-{n}.log", "wb") as log:
                procs.append(subprocess.Popen(
                    [str(BIN / "celery"), "-A", "workers.app", "worker", "-Q", "bulk,default",
                     "-c", str(args.concurrency), "-n", f"bench{n}@%h", "--without-mingle",
                     "--without-gossip", "--loglevel", "WARNING"],
                    env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, cwd=str(ROOT)))
        time.sleep(4)  # workers up and connected

        t0 = time.perf_counter()
        started_at = utcnow()
        with transaction() as session:
            audience = service.start_send(session, edition_id, by="bench")
        assert audience == args.readers
        while True:
            with transaction() as session:
                state = session.scalar(select(Edition.state).where(Edition.id == edition_id))
                if state == "sent":
                    last = session.scalar(select(func.max(Delivery.sent_at))
                                          .where(Delivery.edition_id == edition_id))
                    counts = service.state_counts(session, edition_id)
                    break
            time.sleep(0.2)
            if time.perf_counter() - t0 > 3600:
                raise RuntimeError("the send did not finish in an hour")
        elapsed = (last - started_at).total_seconds()
        results["end_to_end_seconds"] = round(elapsed, 2)
        results["messages_per_second"] = round(args.readers / elapsed, 1)
        results["deliveries"] = counts
        rss = {}
        for p in procs:
            for child in children(p.pid):
                rss[child] = peak_rss_kib(child)
            rss[p.pid] = peak_rss_kib(p.pid)
        results["worker_peak_rss_mib"] = {str(k): round(v / 1024, 1) for k, v in rss.items()}

        # The baselines, against the same sink, in the same run.
        with transaction() as session:
            edition = session.get(Edition, edition_id)
            from mailer.delivery.assembly import Reader
            from mailer.delivery.sender import assembler_for

            payload = assembler_for(edition).build(
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
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
        sink.terminate()
        from mailer.db import dispose_engines

        dispose_engines()
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"send-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
