"""``/metrics``, ``/healthz`` and ``/readyz`` against a real send: the figures agree with the
database, the workers' counters reach Redis, and access is limited as configured."""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from mailer.bounces.actions import record_bounce
from mailer.bounces.models import Bounce, BounceClass
from mailer.config import get_settings
from mailer.db import transaction
from mailer.deliveries.models import Delivery
from mailer.delivery import service as sending
from mailer.lists.service import first_list
from mailer.subscribers.signup import Profile, sign_up
from tests.conftest import wait_for
from tests.support.bounce_mail import status_of
from tests.support.factories import BOUNCES, edition_state, make_edition, make_subscribers
from tests.support.processes import WebServer, free_port

TOKEN = "a-long-metrics-token-for-the-tests"


def scrape(url: str, **kwargs: object) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} of one scrape."""
    response = httpx.get(f"{url}/metrics", timeout=30, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return metrics.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def by_label(metrics: dict, name: str, label: str) -> dict[str, float]:  # type: ignore[type-arg]
    return {dict(k)[label]: v for k, v in metrics.get(name, {}).items()}


@pytest.fixture
def own_web(stack):  # type: ignore[no-untyped-def]
    """Start a web server of its own with extra settings."""
    servers: list[WebServer] = []

    def start(**env: str) -> WebServer:
        port = free_port()
        server = WebServer({**stack.env, "MAILER_BASE_URL": f"http://127.0.0.1:{port}", **env},
                           stack.tmp / f"web-{port}.log", port)
        servers.append(server)
        return server.start()  # type: ignore[return-value]

    yield start
    for server in servers:
        server.stop()


def test_a_confirmation_mail_is_counted_under_its_own_kind(clean, worker, web) -> None:
    """send_one times and counts every kind of message as the bulk sender counts the
    newsletters: a confirmation mail shows under kind="confirmation", and the newsletter
    figures stay the newsletters' alone."""
    clean.smtp.behaviour.add("refused@example.org", "rcpt", "550 5.1.1 <x>: no such user")
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    for address in ("counted@example.org", "refused@example.org"):
        answer = client.post("/subscribe", data={
            "email": address, "first_name": "Ada", "consent": "yes"})
        assert answer.status_code == 200, answer.text
    wait_for(lambda: clean.smtp.to("counted@example.org"), what="the confirmation mail")

    def counted() -> dict | None:  # type: ignore[type-arg]
        m = scrape(web.url)
        replies = by_kind(m, "mailer_smtp_replies_by_kind_total")
        return m if replies.get(("confirmation", "250")) == 1 and replies.get(
            ("confirmation", "550")) == 1 else None

    metrics = wait_for(counted, timeout=30, what="the confirmation mails to be counted")
    assert value(metrics, "mailer_smtp_latency_by_kind_seconds_count", kind="confirmation") == 2
    assert value(metrics, "mailer_smtp_latency_by_kind_seconds_bucket", kind="confirmation",
                 le="+Inf") == 2
    assert value(metrics, "mailer_smtp_latency_by_kind_seconds_sum", kind="confirmation") > 0
    assert not any(k == "delivery" for k, _ in by_kind(
        metrics, "mailer_smtp_replies_by_kind_total"))
    assert sum(by_label(metrics, "mailer_smtp_replies_total", "code").values()) == 0
    assert value(metrics, "mailer_messages_sent_total") == 0


def by_kind(metrics: dict, name: str) -> dict[tuple[str, str], float]:  # type: ignore[type-arg]
    return {(dict(k)["kind"], dict(k)["code"]): v for k, v in metrics.get(name, {}).items()}


def test_metrics_match_the_database_after_a_send_with_failures_and_bounces(
        clean, worker, web) -> None:
    readers = make_subscribers(40)
    hard, policy = readers[3:6], readers[10:12]
    for address in hard:
        clean.smtp.behaviour.add(address, "rcpt", "550 5.1.1 <x>: Recipient address rejected: "
                                                  "User unknown in virtual mailbox table")
    for address in policy:
        clean.smtp.behaviour.add(address, "data", "554 5.7.1 Message rejected as spam by "
                                                  "Content Filtering")
    edition_id = make_edition()
    with transaction() as session:
        assert sending.start_send(session, edition_id, by="test", settings=get_settings()) == 40
    wait_for(lambda: edition_state(edition_id) == "sent", timeout=120, what="the send")

    # One reader complains about the newsletter afterwards (an ARF report, a webhook).
    with transaction() as session:
        delivery = session.scalars(select(Delivery).where(
            Delivery.edition_id == edition_id, Delivery.state == "sent")
            .order_by(Delivery.id)).first()
        record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.complaint, source="arf",
                      recipient="reader00000@example.net", delivery_id=delivery.id,
                      attribution="verp", fingerprint="complaint-1")

    # The last batch's SMTP figures reach Redis when its task ends.
    metrics = wait_for(lambda: (m := scrape(web.url)) and sum(
        by_label(m, "mailer_smtp_replies_total", "code").values()) == 40 and m,
        timeout=30, what="every SMTP reply to be counted")
    with transaction() as session:
        states = dict(session.execute(select(Delivery.state, func.count())
                                      .group_by(Delivery.state)).all())
        classes = dict(session.execute(select(Bounce.bounce_class, func.count())
                                       .group_by(Bounce.bounce_class)).all())
        codes = dict(session.execute(select(Delivery.smtp_code, func.count())
                                     .group_by(Delivery.smtp_code)).all())
    assert states == {"sent": 35, "bounced": 3, "failed": 2}
    assert classes == {"hard": 3, "policy": 2, "complaint": 1}

    deliveries = by_label(metrics, "mailer_deliveries", "state")
    assert {k: v for k, v in deliveries.items() if v} == states
    assert set(deliveries) >= {"queued", "sending", "deferred", "skipped", "cancelled"}
    assert by_label(metrics, "mailer_bounces_total", "class") == classes
    assert by_label(metrics, "mailer_smtp_replies_total", "code") == {
        str(code): n for code, n in codes.items()}
    assert value(metrics, "mailer_messages_sent_total") == states["sent"]
    assert value(metrics, "mailer_smtp_latency_seconds_count") == 40
    assert value(metrics, "mailer_smtp_latency_seconds_bucket", le="+Inf") == 40
    assert value(metrics, "mailer_smtp_latency_seconds_sum") > 0
    buckets = [v for k, v in sorted(metrics["mailer_smtp_latency_seconds_bucket"].items(),
                                    key=lambda kv: float(dict(kv[0])["le"]))]
    assert buckets == sorted(buckets)  # cumulative
    assert value(metrics, "mailer_policy_rejections_total") == 2
    assert value(metrics, "mailer_complaints_total") == 1
    assert value(metrics, "mailer_edition_complaint_rate", edition=str(edition_id)) == \
        pytest.approx(1 / 35)
    assert value(metrics, "mailer_complaint_rate") == pytest.approx(1 / 35)
    alerts = by_label(metrics, "mailer_alert", "alert")
    assert alerts["complaint_rate"] == 1 and alerts["policy_rejections"] == 1
    assert alerts["circuit_breaker"] == 0 and alerts["queue_not_draining"] == 0
    assert by_label(metrics, "mailer_queue_depth", "queue") == {
        "bulk": 0, "confirmations": 0, "default": 0, "webhooks": 0}
    assert value(metrics, "mailer_redis_up") == 1 and value(metrics, "mailer_database_up") == 1
    assert by_label(metrics, "mailer_subscribers", "status") == {"confirmed": 39,
                                                                 "unsubscribed": 1}
    assert by_label(metrics, "mailer_suppressions", "reason") == {"hard_bounce": 3,
                                                                  "complaint": 1}
    # The worker's heartbeat (cleared with Redis by the fixture) comes back on its own.
    wait_for(lambda: value(scrape(web.url), "mailer_workers_alive") >= 1, timeout=40,
             what="the worker's heartbeat")


def test_a_delivery_can_be_followed_in_the_worker_log(clean, worker) -> None:
    # The worker lives for the session and ids start again at 1 in every test: read only
    # what it logs from now on.
    before = len(worker.output())
    readers = make_subscribers(3)
    clean.smtp.behaviour.add(readers[1], "rcpt", "550 5.1.1 User unknown")
    edition_id = make_edition()
    with transaction() as session:
        sending.start_send(session, edition_id, by="test", settings=get_settings())
    wait_for(lambda: edition_state(edition_id) == "sent", timeout=60, what="the send")
    with transaction() as session:
        bounced = session.scalar(select(Delivery.id).where(Delivery.state == "bounced"))

    def lines() -> list[dict[str, object]]:
        out = []
        for line in worker.output()[before:].splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    rejected = wait_for(lambda: [r for r in lines() if r.get("delivery_id") == bounced],
                        timeout=60, what="the log line of the bounced delivery")
    [record] = rejected
    assert record["edition_id"] == edition_id and record["smtp_code"] == 550
    task_id = record["task_id"]
    assert task_id and record["task"] == "workers.bulk.send_batch"
    # The same task's summary line names the edition and the task. It is written after
    # the last delivery is recorded, so on a busy machine after the edition reads "sent".
    summary = wait_for(lambda: [r for r in lines() if r.get("task_id") == task_id
                                and str(r["msg"]).startswith("batch done")],
                       timeout=60, what="the batch's summary line")
    assert summary[0].get("edition_id") == edition_id


def test_task_failures_and_retries_are_counted(clean, worker, web) -> None:
    from tests.support.subscribers import ORIGIN
    from workers.app import app
    from workers.confirmations import send_confirmation

    # A task that fails: a message whose arguments do not fit the task.
    app.send_task("workers.bulk.send_batch", args=[], queue="bulk")
    # A task that asks to be retried: the SMTP server answers 451 to the confirmation mail.
    clean.smtp.behaviour.add("greylisted@example.org", "rcpt", "451 4.7.1 Greylisted")
    with transaction() as session:
        reader = sign_up(session, email="greylisted@example.org",
                                     profile=Profile(), origin=ORIGIN,
                                     signup=get_settings().signup, lists=[first_list(session)])
        reader_id = reader.id
    assert isinstance(reader_id, int)
    send_confirmation.delay(reader_id)

    metrics = wait_for(lambda: (m := scrape(web.url)) and m.get("mailer_task_retries_total")
                       and m.get("mailer_task_failures_total") and m,
                       timeout=30, what="a failure and a retry to be counted")
    assert by_label(metrics, "mailer_task_failures_total", "task") == {
        "workers.bulk.send_batch": 1}
    # (The retry comes back after ~30 s and may be counted again by then.)
    assert by_label(metrics, "mailer_task_retries_total", "task").keys() == {
        "workers.confirmations.send_confirmation"}
    assert status_of(reader_id) == "pending"


def test_metrics_are_limited_to_a_token_or_the_configured_networks(clean, own_web) -> None:
    tokened = own_web(MAILER_METRICS_TOKEN=TOKEN, MAILER_METRICS_NETWORKS='["10.0.0.0/8"]')
    refused = httpx.get(f"{tokened.url}/metrics")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert "mailer_" not in refused.text
    wrong = httpx.get(f"{tokened.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401
    assert httpx.get(f"{tokened.url}/metrics?token={TOKEN}").status_code == 401
    metrics = scrape(tokened.url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert "mailer_queue_depth" in metrics

    closed = own_web(MAILER_METRICS_NETWORKS='["192.0.2.0/24"]')
    assert httpx.get(f"{closed.url}/metrics").status_code == 403
    assert httpx.get(f"{closed.url}/metrics",
                     headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403
    # Loopback is in the default networks: no token needed there.
    assert "mailer_deliveries" in scrape(own_web().url)


def test_healthz_is_liveness_and_readyz_names_what_is_missing(clean, worker, web,
                                                              own_web) -> None:
    assert httpx.get(f"{web.url}/healthz").json() == {"status": "ok"}
    ready = wait_for(lambda: (r := httpx.get(f"{web.url}/readyz", timeout=30)).status_code == 200
                     and r, timeout=40, what="/readyz to see the worker")
    body = ready.json()
    assert body["status"] == "ready" and body["database"] == body["redis"] == body["smtp"] == "ok"
    assert body["workers"].startswith("ok: ")

    closed = free_port()
    no_smtp = own_web(MAILER_SMTP_URL=f"smtp://127.0.0.1:{closed}")
    answer = httpx.get(f"{no_smtp.url}/readyz", timeout=30)
    assert answer.status_code == 503 and answer.json()["smtp"].startswith("error: ")
    assert answer.json()["database"] == "ok"
    assert httpx.get(f"{no_smtp.url}/healthz").status_code == 200

    no_redis = own_web(MAILER_REDIS_URL=f"redis://127.0.0.1:{closed}/0")
    answer = httpx.get(f"{no_redis.url}/readyz", timeout=30)
    assert answer.status_code == 503
    assert answer.json()["redis"].startswith("error: ")
    assert answer.json()["workers"].startswith("error: ")
    assert httpx.get(f"{no_redis.url}/healthz").status_code == 200
    # /metrics still answers, saying which part could not be read.
    metrics = scrape(no_redis.url)
    assert value(metrics, "mailer_redis_up") == 0 and value(metrics, "mailer_database_up") == 1
    assert "mailer_deliveries" in metrics


def test_the_deploy_examples_use_metrics_that_exist(clean, web) -> None:
    """deploy/: the Prometheus scrape example, the alert rules and the Grafana dashboard
    only use metrics that /metrics exports (a renamed metric would leave them blind)."""
    import re
    from pathlib import Path

    import yaml

    deploy = Path(__file__).resolve().parents[1] / "deploy"
    text = httpx.get(f"{web.url}/metrics", timeout=30).text
    exported = set()
    for family in text_string_to_metric_families(text):  # families without samples too
        exported |= {family.name, f"{family.name}_total"} | {s.name for s in family.samples}
    assert {"mailer_workers_alive", "mailer_smtp_replies_total", "mailer_task_retries_total",
            "mailer_smtp_latency_seconds_bucket", "mailer_edition_complaint_rate"} <= exported

    scrape_config = yaml.safe_load((deploy / "prometheus.yml").read_text())
    job = scrape_config["scrape_configs"][0]
    assert job["job_name"] == "mailer" and job["metrics_path"] == "/metrics"
    assert scrape_config["rule_files"] == ["alert-rules.yml"]
    rules = yaml.safe_load((deploy / "alert-rules.yml").read_text())
    dashboard = json.loads((deploy / "grafana-dashboard.json").read_text())
    expressions = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    expressions += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in expressions for name in re.findall(r"\bmailer_[a-z_]+", expr)}
    assert len(used) >= 15
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    alerts = {re.search(r'alert="(\w+)"', e).group(1) for e in expressions if 'alert="' in e}
    from mailer.ops.alerts import NAMES

    assert alerts <= set(NAMES)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "mailer-overview"
