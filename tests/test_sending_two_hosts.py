"""Workers on two machines share one PostgreSQL and one Redis. The test makes two hosts of
its own (network namespaces, a veth pair each, a host name each), runs a worker on each —
started with Procfile.dev's command line — and sends one edition: every reader gets it
once (within the bound for a killed worker), the per-domain limit holds across both hosts,
and when one host's worker is killed with -9 (no goodbye, its claims and its Celery
messages stranded) the other host finishes the edition."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from tests.conftest import SENDING_ENV, _apply_env, wait_for
from tests.support import netns
from tests.support.factories import counts, make_edition, make_subscribers, start, wait_sent
from tests.support.processes import Beat, Process, procfile_command
from tests.support.redis_server import RedisServer
from tests.support.smtp_server import RecordingSMTPServer

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(netns.available() is not None,
                                 reason=str(netns.available()))]
COMMIT_EVERY = 20  # MAILER_COMMIT_EVERY's default: the duplicates bound per process
#: How much later than its token a message may reach the sink (see the rate check).
LAG = 0.2
RATE = 25  # per recipient domain and second, across both hosts


class HostWorker(Process):
    ready_text = " ready."


@dataclass
class TwoHosts:
    hosts: list[netns.Host]
    smtp: RecordingSMTPServer
    worker_env: list[dict[str, str]]
    tmp: object
    procs: list[Process] = field(default_factory=list)

    def worker(self, index: int) -> HostWorker:
        host = self.hosts[index]
        w = HostWorker(host.argv(procfile_command("worker")), self.worker_env[index],
                       self.tmp / f"worker-{host.name}.log")  # type: ignore[operator]
        self.procs.append(w)
        return w.start(timeout=90)  # type: ignore[return-value]


@pytest.fixture
def two_hosts(clean) -> Iterator[TwoHosts]:  # type: ignore[no-untyped-def]
    if clean.backend != "postgresql":
        pytest.skip("workers on several machines share a PostgreSQL server; SQLite is a "
                    "file on one machine")
    hosts = [netns.make_host("host-a", 1), netns.make_host("host-b", 2)]
    gateways = [h.gateway for h in hosts]
    db = urlsplit(clean.database_url.replace("postgresql+psycopg", "postgresql"))
    forwarder = netns.Forwarder(gateways, (db.hostname or "127.0.0.1", db.port or 5432))
    redis = RedisServer(clean.tmp / f"redis-{uuid.uuid4().hex[:6]}",
                        bind=("127.0.0.1", *gateways)).start()
    smtp = RecordingSMTPServer(host="0.0.0.0").start()
    mine = {**SENDING_ENV, "MAILER_REDIS_URL": redis.url,
            "MAILER_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
            "MAILER_DOMAIN_RATE_LIMIT_PER_SECOND": str(RATE)}
    base = {k: os.environ.get(k) for k in mine}
    _apply_env(mine)
    worker_env = [{
        **clean.env, **mine,
        "MAILER_DATABASE_URL": clean.database_url.replace(
            f"@{db.hostname}:{db.port}", f"@{gw}:{forwarder.port}"),
        "MAILER_REDIS_URL": f"redis://{gw}:{redis.port}/0",
        "MAILER_SMTP_URL": f"smtp://{gw}:{smtp.port}?tls=none",
    } for gw in gateways]
    rig = TwoHosts(hosts, smtp, worker_env, clean.tmp)
    beat = Beat({**clean.env, **mine}, clean.tmp / "beat-two-hosts.log",
                clean.tmp / f"beat-{uuid.uuid4().hex}")
    rig.procs.append(beat)
    beat.start()
    try:
        yield rig
    finally:
        for proc in reversed(rig.procs):
            proc.stop()
        smtp.stop()
        redis.stop()
        forwarder.stop()
        for host in hosts:
            host.remove()
        for key, value in base.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _apply_env({})


def test_two_hosts_send_one_edition_exactly_once_within_one_rate_limit(two_hosts) -> None:
    smtp = two_hosts.smtp
    readers = make_subscribers(2000, domains=4)  # 500 readers in each of 4 domains
    edition_id = make_edition()
    first = two_hosts.worker(0)
    two_hosts.worker(1)
    start(edition_id)
    wait_for(lambda: len(smtp.messages) >= 800, timeout=120, what="800 messages")
    peers = {m.peer for m in smtp.messages}
    first.kill()  # kill -9 of host A's worker: main process and pool, nothing cleaned up
    wait_sent(edition_id, timeout=180)

    # Both hosts sent, from their own addresses.
    assert {h.address for h in two_hosts.hosts} <= peers
    got = Counter(r.lower() for m in smtp.messages for r in m.rcpt_tos)
    missing = [r for r in readers if got[r] == 0]
    assert not missing, f"{len(missing)} readers never got the edition"
    duplicates = sum(n - 1 for n in got.values() if n > 1)
    assert duplicates <= 4 * COMMIT_EVERY, f"{duplicates} duplicates"  # 4 processes killed
    assert counts(edition_id) == {"sent": 2000}

    # One bucket per domain in the shared Redis, whichever host sends: in any second at
    # most 2 x RATE tokens are taken (a full bucket, then its refill). The sink sees each
    # message a little after its token was taken (a group takes its tokens, then sends one
    # message after another), so the window read at the sink is shortened by that lag,
    # allowed up to LAG: arrivals in [s, s + 1 - LAG) took their tokens within one second.
    for d in range(4):
        times = sorted(m.at for m in smtp.messages if m.rcpt_tos[0].endswith(f"@d{d}.example.net"))
        busiest = max(sum(1 for t in times if s <= t < s + 1 - LAG) for s in times)
        assert busiest <= 2 * RATE, f"d{d}: {busiest} messages within {1 - LAG:.1f} s"
        assert times[-1] - times[0] >= 0.9 * (len(times) - RATE) / RATE
    print(f"\ntwo hosts: {duplicates} duplicates after killing host A's worker; peers {peers}")
