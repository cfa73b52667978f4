"""What a send survives: a worker killed with -9, a Redis restart, an SMTP server that hangs
up, answers 421, 451, 550 5.1.1, 554 5.7.1, or stops answering. Real worker processes,
a real (private) Redis, a real SMTP server. Every reader gets the edition exactly once,
except at most the messages a killed process had sent since its last commit
(``MAILER_COMMIT_EVERY`` per process); the counts add up."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import select

from mailer.db import transaction
from mailer.deliveries.models import Delivery
from mailer.delivery import service as sending
from mailer.subscribers.models import Subscriber
from tests.conftest import wait_for, wait_settled
from tests.support.factories import (
    counts,
    edition_state,
    make_edition,
    make_subscribers,
    start,
    wait_sent,
)

pytestmark = pytest.mark.slow
COMMIT_EVERY = 20  # the default of MAILER_COMMIT_EVERY: the duplicates bound per process


def delivered(smtp) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(r.lower() for m in list(smtp.messages) for r in m.rcpt_tos)


def assert_everyone_once(smtp, readers: list[str], allowed_duplicates: int) -> int:  # type: ignore[no-untyped-def]
    got = delivered(smtp)
    missing = [r for r in readers if got[r] == 0]
    assert not missing, f"{len(missing)} readers never got the edition, e.g. {missing[:3]}"
    duplicates = sum(n - 1 for n in got.values() if n > 1)
    assert duplicates <= allowed_duplicates, f"{duplicates} duplicate copies"
    return duplicates


def test_kill_9_a_worker_mid_send(rig) -> None:
    readers = make_subscribers(3000)
    edition_id = make_edition()
    concurrency = 2
    first = rig.worker("doomed", concurrency=concurrency)
    rig.beat()
    assert start(edition_id) == 3000
    wait_for(lambda: len(rig.stack.smtp.messages) >= 1000, timeout=120, what="1,000 messages")
    first.kill()  # SIGKILL to the whole process group: main process and its children
    at_kill = len(rig.stack.smtp.messages)
    assert at_kill < 3000, "the send finished before the kill; the test proves nothing"
    with transaction() as session:
        stranded = session.scalar(select(Delivery.id).where(
            Delivery.edition_id == edition_id, Delivery.state.in_(["queued", "sending"])).limit(1))
    assert stranded is not None
    rig.worker("rescuer", concurrency=concurrency)
    wait_sent(edition_id, timeout=240)
    # At most what each killed process had sent since its last commit can have been
    # accepted by the server without being recorded as sent.
    assert_everyone_once(rig.stack.smtp, readers,
                         allowed_duplicates=concurrency * COMMIT_EVERY)
    final = counts(edition_id)
    assert final == {"sent": 3000}


def test_a_redis_restart_does_not_stop_a_worker_started_as_users_start_it(rig) -> None:
    """The worker runs with Procfile.dev's own command line. When Redis goes, it holds a
    batch (stalled on SMTP) and has free processes, so it is waiting on BRPOP: the state in
    which kombu's restore of unacknowledged messages used to kill it (workers/broker.py).
    An idle worker, or one holding exactly its prefetch limit, survived even before."""
    readers = make_subscribers(1200)
    smtp = rig.stack.smtp
    smtp.behaviour.add(readers[700], "data", "stall", times=1)  # holds its batch 20 s
    worker = rig.user_worker("as-users-run-it", MAILER_SMTP_TIMEOUT="20")
    rig.beat()
    edition_id = make_edition()
    start(edition_id)
    wait_for(lambda: smtp.stalls >= 1, timeout=120, what="the stalled transaction")
    settled = _settled(lambda: len(smtp.messages))  # the other batches are done
    assert settled < 1200
    rig.redis.restart(down_seconds=1.0)  # every Celery message is gone
    time.sleep(5)
    assert worker.alive, worker.output()[-3000:]
    assert "Unrecoverable error" not in worker.output()
    wait_sent(edition_id, timeout=240)
    assert worker.alive
    # The stalled message never reached the mailbox: everyone exactly once.
    assert_everyone_once(smtp, readers, allowed_duplicates=0)
    assert counts(edition_id) == {"sent": 1200}


def _settled(read, quiet: float = 1.5, timeout: float = 60):  # type: ignore[no-untyped-def]
    """Wait until ``read()`` stops changing for ``quiet`` seconds; return its value."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"still changing after {timeout}s")


def test_smtp_server_misbehaving_in_every_way(rig) -> None:
    readers = make_subscribers(2000)
    smtp = rig.stack.smtp
    hangups = readers[100:110]
    closing = readers[200:210]
    greylisted = readers[300:340]
    unknown = readers[400:430]
    blocked = readers[500:520]
    stalled = readers[600:603]
    for r in hangups:
        smtp.behaviour.add(r, "data", "hangup", times=1)
    for r in closing:
        smtp.behaviour.add(r, "rcpt", "421 4.3.2 Service shutting down, closing channel", times=1)
    for r in greylisted:
        smtp.behaviour.add(r, "rcpt", "451 4.7.1 Greylisted, please try again later", times=2)
    for r in unknown:
        smtp.behaviour.add(
            r, "rcpt", "550 5.1.1 The email account that you tried to reach does not exist")
    for r in blocked:
        smtp.behaviour.add(r, "data", "554 5.7.1 Service unavailable; client host blocked")
    for r in stalled:
        smtp.behaviour.add(r, "data", "stall", times=1)
    edition_id = make_edition()
    # The bad addresses come in clusters here; the breaker is tested on its own below.
    rig.worker("w1", MAILER_BREAKER_HARD_BOUNCE_RATE="0.9", MAILER_BREAKER_POLICY_RATE="0.9")
    rig.beat()
    start(edition_id)
    wait_sent(edition_id, timeout=240)

    got = delivered(smtp)
    for r in unknown + blocked:
        assert got[r] == 0
    ok = [r for r in readers if r not in set(unknown + blocked)]
    # A stalled DATA may have been taken by the server before the timeout: the only
    # messages allowed twice are those.
    duplicates = {r: n for r, n in got.items() if n > 1}
    assert set(duplicates) <= set(stalled), duplicates
    assert all(got[r] >= 1 for r in ok)
    final = counts(edition_id)
    assert final == {"sent": 2000 - 50, "bounced": 30, "failed": 20}
    with transaction() as session:
        rows = dict(session.execute(
            select(Subscriber.email, Delivery.smtp_reply)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Subscriber.email.in_(unknown[:1] + blocked[:1]))).all())
    assert "does not exist" in rows[unknown[0]]  # the server's words are kept
    assert "client host blocked" in rows[blocked[0]]


def test_circuit_breaker_pauses_a_send_that_bounces_too_much(rig) -> None:
    readers = make_subscribers(600)
    smtp = rig.stack.smtp
    for r in readers[:60]:  # 30 % of the first window of 200 do not exist
        smtp.behaviour.add(r, "rcpt", "550 5.1.1 User unknown")
    # Interleave them with good readers so the first window sees them.
    edition_id = make_edition()
    with transaction() as session:
        ids = session.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
    assert len(ids) == 600
    rig.worker("breaker", MAILER_BREAKER_WINDOW="200", MAILER_BREAKER_HARD_BOUNCE_RATE="0.1")
    start(edition_id)
    wait_for(lambda: edition_state(edition_id) == "paused", timeout=60, what="the breaker")
    with transaction() as session:
        progress = sending.progress(session, edition_id)
    assert "circuit breaker" in progress.reason and "hard bounces" in progress.reason
    assert progress.counts["queued"] > 0  # stopped before the end
    settled = wait_settled(lambda: len(smtp.messages), what="messages after the breaker")
    time.sleep(1.0)
    assert len(smtp.messages) == settled


def _a_sending_child(worker) -> int:  # type: ignore[no-untyped-def]
    """The pid of one of ``worker``'s pool processes that is working on a batch now."""
    from mailer.delivery.models import SenderProcess

    children = set(_children(worker.proc.pid))
    with transaction() as session:
        busy = session.scalars(select(SenderProcess.pid).where(
            SenderProcess.edition_id.is_not(None))).all()
    mine = [pid for pid in busy if pid in children]
    assert mine, "no pool process is sending"
    return mine[0]


def _children(pid: int) -> list[int]:
    import subprocess

    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True)
    return [int(x) for x in out.stdout.split()]


def test_three_kills_and_a_redis_restart_during_one_send_of_20000(rig, request) -> None:
    """kill -9 of a sending pool process three times and a Redis restart, during one send
    of 20,000, with the worker as users start it and nobody restarting anything: nobody is
    missed, at most COMMIT_EVERY duplicates per killed process, and the edition is sent
    within 30 s of the last fault (Celery hands the killed process's batch out again at
    once; that batch queues the dead holder's claims again; the sweeper queues what the
    Redis restart lost)."""
    import os
    import signal

    if rig.stack.backend != "postgresql":
        # The 30 s include sending the 4,000 messages after the last fault: a production
        # rate, PostgreSQL's. SQLite's single writer on a shared 2-core machine sends them
        # in about 40 s; its recovery is shown by the kill and Redis tests above.
        pytest.skip("a PostgreSQL target: SQLite sends the rest too slowly for the 30 s")

    readers = make_subscribers(20_000, domains=20)
    smtp = rig.stack.smtp
    smtp.keep_bodies = False
    worker = rig.user_worker("enduring")
    main_pid = worker.proc.pid
    rig.beat()
    edition_id = make_edition()
    start(edition_id)
    killed = []
    for at, fault in ((3_000, "kill"), (7_000, "redis"), (11_000, "kill"), (16_000, "kill")):
        wait_for(lambda at=at: len(smtp.messages) >= at, timeout=300, interval=0.1,
                 what=f"{at:,} messages")
        if fault == "kill":
            pid = _a_sending_child(worker)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        else:
            rig.redis.restart(down_seconds=1.0)
        last_fault = time.monotonic()
    assert len(smtp.messages) < 20_000, "the send finished before the last fault"
    wait_sent(edition_id, timeout=120)
    took = time.monotonic() - last_fault
    bound = len(killed) * COMMIT_EVERY  # the README's: MAILER_COMMIT_EVERY per dying process
    # What the run measured, in the output (-s) and in the test's report (user_properties,
    # which reporting plugins read; record_property would not work with xunit2 JUnit).
    duplicates = sum(n - 1 for n in delivered(smtp).values() if n > 1)
    request.node.user_properties += [("duplicates", duplicates), ("duplicates_bound", bound),
                                     ("seconds_after_last_fault", round(took, 1))]
    print(f"\n3 kills and a Redis restart: {duplicates} duplicates (bound {bound}); "
          f"sent {took:.1f} s after the last fault")
    assert took <= 30, f"the edition was sent {took:.0f} s after the last fault"
    assert worker.alive and worker.proc.pid == main_pid  # nobody restarted it
    assert "Unrecoverable error" not in worker.output()
    assert len(killed) == 3
    assert assert_everyone_once(smtp, readers, allowed_duplicates=bound) == duplicates
    assert counts(edition_id) == {"sent": 20_000}
