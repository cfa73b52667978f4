"""``mailer status`` and the operators' alerts: a tripped circuit breaker, policy
rejections, a queue that does not drain, no worker — and a healthy service saying so."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from mailer.bounces.actions import record_bounce
from mailer.bounces.models import BounceClass
from mailer.cli import app
from mailer.config import get_settings, reset_settings
from mailer.db import transaction
from mailer.delivery import service as sending
from tests.conftest import wait_for
from tests.support.factories import BOUNCES, edition_state, make_edition, make_subscribers

runner = CliRunner()
BREAKER = "circuit breaker: 30 hard bounces in messages 1–200 (15.0 % > 10.0 %)"


def status_json() -> tuple[int, dict]:  # type: ignore[type-arg]
    result = runner.invoke(app, ["status", "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.output)


def names(snapshot: dict) -> list[str]:  # type: ignore[type-arg]
    return sorted(a["name"] for a in snapshot["alerts"])


def test_alerts_for_a_tripped_breaker_policy_rejections_a_stuck_queue_and_no_worker(
        rig, monkeypatch) -> None:
    monkeypatch.setenv("MAILER_QUEUE_STALL_SECONDS", "1")
    reset_settings()
    try:
        make_subscribers(30)
        edition_id = make_edition()
        with transaction() as session:
            # no worker: it waits in Redis
            sending.start_send(session, edition_id, by="test", settings=get_settings())
        with transaction() as session:
            sending.pause(session, edition_id, by="circuit breaker", reason=BREAKER)
            record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.policy, source="smtp",
                          recipient="reader00001@example.net", status_code="5.7.1",
                          diagnostic="554 5.7.1 Service unavailable; client host blocked "
                                     "using zen.spamhaus.org", edition_id=edition_id)

        code, snapshot = status_json()
        assert code == 2 and snapshot["healthy"] is False  # critical now
        assert snapshot["status"] == "critical"
        assert names(snapshot) == ["circuit_breaker", "no_worker", "policy_rejections"]
        breaker = next(a for a in snapshot["alerts"] if a["name"] == "circuit_breaker")
        assert breaker["edition_id"] == edition_id and "15.0 %" in breaker["message"]
        policy = next(a for a in snapshot["alerts"] if a["name"] == "policy_rejections")
        assert "spamhaus" in policy["message"]
        assert {q["queue"]: q["depth"] for q in snapshot["queues"]} == {
            "bulk": 1, "confirmations": 0, "default": 0, "webhooks": 0}
        assert snapshot["workers"] == []
        [edition] = snapshot["editions"]
        assert edition["id"] == edition_id and edition["state"] == "paused"
        assert edition["progress"]["audience"] == 30 and edition["progress"]["remaining"] == 30
        assert edition["progress"]["reason"] == BREAKER

        # Held for longer than the stall time with no worker touching it: not draining.
        snapshot = wait_for(lambda: "queue_not_draining" in names(s := status_json()[1]) and s,
                            timeout=10, what="the queue_not_draining alert")
        stuck = next(a for a in snapshot["alerts"] if a["name"] == "queue_not_draining")
        assert "bulk queue" in stuck["message"]
        assert next(q for q in snapshot["queues"] if q["queue"] == "bulk")["stalled"] is True

        once = runner.invoke(app, ["status", "--once"], catch_exceptions=False,
                             env={"COLUMNS": "160"})
        assert once.exit_code == 2
        for text in ("Alerts", "circuit_breaker", "queue_not_draining", "no_worker", "bulk",
                     "none running", "paused", "0.0 % of 30",
                     # what the Ops page shows besides
                     "Readiness", "database", "SMTP replies", "Automatic drafts"):
            assert text in once.output, text

        # A worker comes: the queue drains (the paused edition's batch stops at once), the
        # worker shows up, and those alerts clear; the paused edition still needs a person.
        rig.worker()
        snapshot = wait_for(lambda: (s := status_json()[1])["workers"] and not {
            "no_worker", "queue_not_draining"} & set(names(s)) and s, timeout=60,
            what="the worker to drain the queue")
        assert names(snapshot) == ["circuit_breaker", "policy_rejections"]
        [worker] = snapshot["workers"]
        assert worker["queues"] == ["bulk", "confirmations", "default", "webhooks"]
        assert worker["concurrency"] == 2
        with transaction() as session:
            sending.resume(session, edition_id, by="test", sending=get_settings().sending)
        wait_for(lambda: edition_state(edition_id) == "sent", timeout=60, what="the send")
        code, snapshot = status_json()
        assert names(snapshot) == ["policy_rejections"] and snapshot["editions"] == []
        # A policy refusal in the last 24 h is for today, not for now.
        assert code == 1 and snapshot["status"] == "warning"
    finally:
        monkeypatch.delenv("MAILER_QUEUE_STALL_SECONDS")
        reset_settings()


def test_a_healthy_service_says_so(clean, worker) -> None:
    code, snapshot = wait_for(lambda: (r := status_json())[1]["workers"] and r, timeout=40,
                              what="the worker's heartbeat")
    assert code == 0 and snapshot["healthy"] is True and snapshot["alerts"] == []
    assert snapshot["redis"] == "ok"
    # The installed command, as a script would run it.
    env = {**os.environ, "COLUMNS": "160"}
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "mailer"), "status",
                           "--once"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All is well" in done.stdout and "worker" in done.stdout


def test_after_a_redis_restart_the_queue_view_sees_the_deliveries_waiting_in_the_database(
        rig, monkeypatch) -> None:
    """The Celery messages are gone with Redis; the deliveries are not. The bulk queue's
    depth is 0, but the view counts what waits in the database, and with no worker taking
    it queue_not_draining fires (in status, and in /metrics)."""
    from mailer.ops.metrics import render

    monkeypatch.setenv("MAILER_QUEUE_STALL_SECONDS", "1")
    reset_settings()
    try:
        make_subscribers(30)
        edition_id = make_edition()
        with transaction() as session:
            # no worker yet
            sending.start_send(session, edition_id, by="test", settings=get_settings())
        rig.redis.restart(down_seconds=0.2)  # the batch's message is gone
        code, snapshot = status_json()
        bulk = next(q for q in snapshot["queues"] if q["queue"] == "bulk")
        assert bulk["depth"] == 0 and bulk["deliveries_waiting"] == 30
        snapshot = wait_for(lambda: "queue_not_draining" in names(s := status_json()[1]) and s,
                            timeout=10, what="the queue_not_draining alert")
        stuck = next(a for a in snapshot["alerts"] if a["name"] == "queue_not_draining")
        assert "30 deliveries wait in the database" in stuck["message"]
        metrics = render(get_settings()).decode()
        assert 'mailer_queue_waiting_deliveries{queue="bulk"} 30.0' in metrics
        assert 'mailer_alert{alert="queue_not_draining"} 1.0' in metrics
        # A worker and the sweeper come: the edition goes out, nothing waits any more.
        rig.worker()
        rig.beat()
        wait_for(lambda: edition_state(edition_id) == "sent", timeout=60, what="the send")
        bulk = next(q for q in status_json()[1]["queues"] if q["queue"] == "bulk")
        assert bulk["deliveries_waiting"] == 0
    finally:
        monkeypatch.delenv("MAILER_QUEUE_STALL_SECONDS")
        reset_settings()


def test_a_policy_refusal_alone_is_a_warning_not_critical(clean, worker) -> None:
    make_subscribers(1)
    edition_id = make_edition()
    with transaction() as session:
        record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.policy, source="smtp",
                      recipient="reader00000@example.net", status_code="5.7.1",
                      diagnostic="554 5.7.1 blocked", edition_id=edition_id)
    code, snapshot = wait_for(lambda: (r := status_json())[1]["workers"] and r, timeout=40,
                              what="the worker's heartbeat")
    assert names(snapshot) == ["policy_rejections"]
    assert code == 1 and snapshot["status"] == "warning"


def _sent_with_a_complaint(clean, refusals: dict[int, tuple[str, str]]) -> int:
    """An edition of 40 readers sent by the session's worker through the test SMTP server,
    which refuses reader ``n`` at ``refusals[n]`` (the SMTP stage, the reply); then a
    complaint about one who was sent it."""
    from sqlalchemy import select

    from mailer.deliveries.models import Delivery
    from tests.support.factories import start, wait_sent

    readers = make_subscribers(40)
    for n, (stage, reply) in refusals.items():
        clean.smtp.behaviour.add(readers[n], stage, reply)
    edition_id = make_edition()
    start(edition_id)
    wait_sent(edition_id)
    with transaction() as session:
        sent = session.scalars(select(Delivery.id).where(
            Delivery.edition_id == edition_id, Delivery.state == "sent")).first()
        record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.complaint, source="test",
                      delivery_id=sent, recipient="x@example.net", fingerprint="complaint-1")
    return edition_id


def test_a_sent_editions_complaint_alert_reads_the_delivery_counts_its_send_kept(
        clean, worker) -> None:
    """The banner on every admin page does not count a sent edition's deliveries again: it
    reads what the end of the send kept, which is what the rows say (a refused reader
    included), and the complaint alert comes out the same."""

    from mailer.bounces.rates import edition_rates
    from mailer.delivery.queries import state_counts
    from mailer.editions.models import Edition
    from mailer.ops import alerts

    refused = ("rcpt", "550 5.1.1 No such user")
    edition_id = _sent_with_a_complaint(clean, {0: refused, 1: refused})
    settings = get_settings()
    with transaction() as session:
        kept = session.get(Edition, edition_id).stats["deliveries"]
        assert kept == state_counts(session, edition_id) == {"sent": 38, "bounced": 2}
        [watched] = alerts.watched_rates(session, settings.sending)
        assert watched == edition_rates(session, edition_id, settings.sending)  # counted
        found = alerts.evaluate(session, settings, queues=[], workers=[], rates=[watched])
    [complaint] = [a for a in found if a.name == "complaint_rate"]
    assert complaint.edition_id == edition_id and complaint.severity == "critical"
    assert "1 complaint(s) for 38 delivered, 2.63 %" in complaint.message


def test_the_banner_says_what_mailer_status_and_metrics_say_after_a_real_send(
        clean, worker) -> None:
    """The banner on top of every admin page reads the queues and heartbeats in one Redis
    round trip (the live workers' infos in a second) and the alerts' rows only when the
    first look finds some; after a real send that a server refused once for policy reasons
    and a reader complained about, its alerts are ``mailer status``'s, one for one, and
    ``/metrics`` raises the same."""

    from mailer.ops.alerts import NAMES
    from mailer.ops.metrics import render
    from mailer.web.admin.render import _banner

    _sent_with_a_complaint(clean, {0: ("data", "554 5.7.1 Message rejected as spam")})
    code, snapshot = wait_for(lambda: (r := status_json())[1]["workers"] and r, timeout=40,
                              what="the worker's heartbeat")
    assert names(snapshot) == ["complaint_rate", "policy_rejections"] and code == 2
    with transaction() as session:
        banner = _banner(object(), session)  # type: ignore[arg-type]  # any staff member
    assert [a.as_dict() for a in banner] == snapshot["alerts"]
    assert "Message rejected as spam" in banner[0].message + banner[1].message
    metrics = render(get_settings()).decode()
    for name in NAMES:
        raised = name in names(snapshot)
        assert f'mailer_alert{{alert="{name}"}} {1.0 if raised else 0.0}' in metrics, name


def test_with_redis_away_the_banner_and_mailer_status_say_redis_unreachable(rig) -> None:
    """The one round trip fails as the ten did: the answer is redis_unreachable, not an
    error page, in the banner as in ``mailer status``."""
    from mailer.ops import status
    from mailer.web.admin.render import _banner

    rig.redis.stop()
    try:
        error, queues, unacked, workers = status.redis_state(get_settings())
        assert error and queues is None and unacked is None and workers is None
        code, snapshot = status_json()
        assert code == 2 and names(snapshot) == ["redis_unreachable"]
        with transaction() as session:
            banner = _banner(object(), session)  # type: ignore[arg-type]
        assert [a.as_dict() for a in banner] == snapshot["alerts"]
    finally:
        rig.redis.start()
    assert status.redis_state(get_settings())[0] is None


def test_a_redis_user_whose_acl_names_the_keys_sees_the_same_workers(rig, monkeypatch) -> None:
    """A Redis user whose ACL names the keys it may read (mailer's keys and Celery's
    queues) sees what the default user sees: the same workers with their infos, the same
    queues, and no redis_unreachable."""
    import redis

    from mailer.ops import status, workers

    settings = get_settings()
    workers.beat("celery@acl-test", {"pid": 42, "queues": ["bulk"], "concurrency": 3},
                 ops=settings.ops)
    every_key = status.redis_state(settings)
    assert every_key[0] is None and [w.hostname for w in every_key[3]] == ["celery@acl-test"]
    admin = redis.Redis.from_url(rig.redis.url)
    admin.execute_command("ACL", "SETUSER", "mailer", "on", ">secret", "resetkeys",
                          "~mailer:*", "~bulk*", "~confirmations*", "~default*",
                          "~webhooks*", "~unacked*", "+@all")
    url = rig.redis.url
    try:
        monkeypatch.setenv("MAILER_REDIS_URL", url.replace("redis://", "redis://mailer:secret@"))
        reset_settings()
        named_keys = status.redis_state(get_settings())
    finally:
        monkeypatch.setenv("MAILER_REDIS_URL", url)
        reset_settings()
    assert named_keys[0] is None
    assert [q.as_dict() for q in named_keys[1]] == [q.as_dict() for q in every_key[1]]
    assert [(w.hostname, w.pid, w.queues, w.concurrency) for w in named_keys[3]] == [
        ("celery@acl-test", 42, ("bulk",), 3)]
