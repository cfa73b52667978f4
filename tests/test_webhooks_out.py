"""Outgoing webhooks against a real HTTP receiver on loopback (tests/support/receiver.py),
with real workers started as Procfile.dev starts them, beat, and a private redis-server:
every request verified with the standardwebhooks library; retries after 500s and after a
timeout; a worker killed with SIGKILL in the middle of a post and a Redis restart lose no
event; private addresses refused; the events of sign-up, confirmation, import, unsubscribe,
complaint, erasure and an edition's states; an endpoint failing for a day disabled, with
the operators' alert."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mailer import privacy
from mailer.bounces.actions import record_bounce
from mailer.bounces.models import BounceClass
from mailer.config import WebhookSettings, get_settings
from mailer.db import transaction, utcnow
from mailer.ops import alerts
from mailer.subscribers.importer import import_rows, read_csv
from mailer.webhooks import endpoints, events, sending
from mailer.webhooks.models import (
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)
from tests.conftest import wait_for
from tests.support import subscribers as readers
from tests.support.factories import BOUNCES
from tests.support.receiver import Receiver

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


def register(url: str, wanted: list[str] | None = None) -> tuple[int, str]:
    with transaction() as session:
        endpoint = endpoints.add(session, url=url, events=wanted or list(events.EVENTS),
                                 by="test", settings=get_settings().webhooks)
        return endpoint.id, endpoint.secret


def deliveries() -> list[WebhookDelivery]:
    with transaction() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def attempts(endpoint_id: int) -> list[WebhookAttempt]:
    with transaction() as session:
        return list(session.scalars(select(WebhookAttempt).where(
            WebhookAttempt.endpoint_id == endpoint_id).order_by(WebhookAttempt.id)))


def all_delivered() -> bool:
    rows = deliveries()
    return bool(rows) and all(d.state == DeliveryState.delivered for d in rows)


def sent_ids() -> set[str]:
    with transaction() as session:
        return set(session.scalars(select(WebhookMessage.message_id)))


def test_sign_up_and_confirm_reach_the_receiver_signed(rig, receiver) -> None:
    endpoint_id, secret = register(receiver.url)
    rig.user_worker()
    reader = readers.make("anna@example.org", "confirmed", first_name="Anna")

    wait_for(lambda: receiver.count() >= 2 and all_delivered(), what=deliveries)
    payloads = receiver.verified(secret)  # standardwebhooks' verify: raises if wrong
    # Two workers' processes post at once: the order of arrival is not promised.
    assert sorted(p["type"] for p in payloads) == ["subscriber.confirmed",
                                                   "subscriber.subscribed"]
    [confirmed] = [p for p in payloads if p["type"] == "subscriber.confirmed"]
    assert confirmed["data"]["subscriber"] == {
        "id": reader.public_id, "email": "anna@example.org", "first_name": "Anna",
        "last_name": "", "organisation": "", "country": "",
        "source": readers.ORIGIN.source}
    assert confirmed["data"]["lists"] == ["newsletter"]
    assert confirmed["timestamp"].endswith("Z")
    first = receiver.requests[0]
    assert first.headers["content-type"] == "application/json"
    assert first.message_id.startswith("msg_")
    with pytest.raises(WebhookVerificationError):  # another secret does not verify
        Webhook(endpoints.new_secret()).verify(first.body, first.headers)
    log = attempts(endpoint_id)
    assert [(a.outcome, a.status_code) for a in log] == [("delivered", 200)] * 2
    assert all(a.latency_ms >= 0 for a in log)


def test_500s_are_retried_with_the_same_id_until_delivered(rig, receiver) -> None:
    receiver.statuses = [500, 503, 500]
    endpoint_id, secret = register(receiver.url, [events.CONFIRMED])
    rig.user_worker()
    readers.make("bert@example.org", "confirmed")

    wait_for(all_delivered, timeout=60, what=lambda: (deliveries(), attempts(endpoint_id)))
    log = attempts(endpoint_id)
    assert [(a.outcome, a.status_code) for a in log] == [
        ("failed", 500), ("failed", 503), ("failed", 500), ("delivered", 200)]
    assert "not today" in log[0].error
    assert len(set(receiver.message_ids())) == 1 and receiver.count() == 4
    assert all(p["type"] == "subscriber.confirmed" for p in receiver.verified(secret))
    [delivery] = deliveries()
    assert delivery.attempts == 4 and delivery.last_status_code == 200
    # The waits grew (0.5 s doubling to 1 s, ±20 %): the retries were not immediate.
    times = [r.at for r in receiver.requests]
    assert all(b - a >= 0.35 for a, b in zip(times, times[1:], strict=False))
    with transaction() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None and endpoint.failing_since is None and endpoint.enabled


def test_a_receiver_slower_than_the_timeout_is_retried(rig, receiver) -> None:
    receiver.delays = [4.0]  # the timeout is 1.5 s
    endpoint_id, secret = register(receiver.url, [events.CONFIRMED])
    rig.user_worker()
    readers.make("carla@example.org", "confirmed")

    wait_for(all_delivered, timeout=60, what=lambda: attempts(endpoint_id))
    log = attempts(endpoint_id)
    assert [a.outcome for a in log] == ["timeout", "delivered"]
    assert "within 1.5 s" in log[0].error
    assert len(receiver.verified(secret)) == 2 and len(set(receiver.message_ids())) == 1


def test_a_worker_killed_mid_post_loses_no_event(rig, receiver) -> None:
    receiver.gate.clear()  # the first post is held until the worker is dead
    register(receiver.url, [events.SUBSCRIBED])
    worker = rig.user_worker("doomed")
    for n in range(12):
        readers.make(f"reader{n}@example.org", "pending")
    assert receiver.arrived.wait(30)
    worker.kill()  # SIGKILL, the whole process group: no ack, no record, no goodbye
    assert not all_delivered()
    receiver.gate.set()

    rig.user_worker("after")
    rig.beat()  # its sweep finds the claims run out and what was queued to the dead worker
    wait_for(all_delivered, timeout=90, what=deliveries)
    assert set(receiver.message_ids()) == sent_ids() and len(sent_ids()) == 12


def test_the_outbox_drains_after_a_redis_restart(rig, receiver) -> None:
    register(receiver.url, [events.SUBSCRIBED])
    rig.user_worker()
    rig.beat()
    rig.redis.stop()  # everything queued in Redis is gone with it
    for n in range(5):  # committed while Redis is away: their tasks cannot be published
        readers.make(f"late{n}@example.org", "pending")
    assert receiver.count() == 0
    rig.redis.start()

    wait_for(all_delivered, timeout=90, what=deliveries)
    assert set(receiver.message_ids()) == sent_ids() and len(sent_ids()) == 5


def test_private_and_loopback_targets_are_refused(rig, receiver) -> None:
    for url, kind in [("http://127.0.0.2:9/hooks", "loopback"),
                      ("http://10.1.2.3/hooks", "private"),
                      ("http://169.254.169.254/latest/meta-data", "link-local"),
                      ("http://[::1]:9/hooks", "loopback")]:
        with pytest.raises(endpoints.TargetRefused, match=f"a {kind} address"), \
                transaction() as session:
            endpoints.add(session, url=url, events=[events.CONFIRMED], by="test",
                          settings=get_settings().webhooks)
    with pytest.raises(endpoints.EndpointError, match="only http"), transaction() as session:
        endpoints.add(session, url="file:///etc/passwd", events=[events.CONFIRMED], by="test",
                      settings=get_settings().webhooks)
    with transaction() as session:
        assert endpoints.all_endpoints(session) == []

    # Allowed when it was added (MAILER_WEBHOOK_ALLOWED_HOSTS), no longer when it is sent:
    # the attempt is refused, logged, and nothing reaches the address.
    endpoint_id, _ = register(receiver.url, [events.CONFIRMED])
    readers.make("dora@example.org", "confirmed")
    [delivery] = deliveries()
    assert sending.deliver(delivery.id, settings=WebhookSettings()) == "refused"
    [attempt] = attempts(endpoint_id)
    assert "loopback address" in attempt.error and attempt.status_code is None
    assert receiver.count() == 0


def test_an_import_tells_of_each_reader_confirmed(rig, receiver) -> None:
    _, secret = register(receiver.url, [events.CONFIRMED])
    rig.user_worker()
    csv = "email,first_name\nemil@example.org,Emil\nfrida@example.org,Frida\nnot-an-address,X\n"
    report = import_rows(read_csv(io.StringIO(csv)), source="import:old.csv", by="test",
                         check_deliverability=False)
    assert report.imported == 2

    wait_for(lambda: receiver.count() >= 2 and all_delivered(), what=deliveries)
    payloads = receiver.verified(secret)
    assert sorted(p["data"]["subscriber"]["email"] for p in payloads) == [
        "emil@example.org", "frida@example.org"]
    assert all(p["type"] == "subscriber.confirmed" and p["data"]["imported"] is True
               and p["data"]["subscriber"]["source"] == "import:old.csv" for p in payloads)


def test_a_complaint_an_unsubscribe_and_an_edition_are_told(rig, receiver) -> None:
    from tests.support.factories import make_edition

    _, secret = register(receiver.url, [events.UNSUBSCRIBED, events.COMPLAINT,
                                        events.EDITION_PAUSED])
    rig.user_worker()
    reader = readers.make("gus@example.org", "confirmed")
    edition_id = make_edition("Spring")
    from mailer.editions.models import Edition, EditionState
    from mailer.editions.states import transition

    with transaction() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        transition(session, edition, EditionState.sending)
        transition(session, edition, EditionState.paused, reason="staff: checking a link")
    with transaction() as session:
        bounce = record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.complaint,
                               source="arf", subscriber_id=reader.id, edition_id=edition_id,
                               recipient=reader.email, attribution="verp")
        assert bounce is not None

    wait_for(lambda: receiver.count() >= 3 and all_delivered(), what=deliveries)
    by_type = {p["type"]: p["data"] for p in receiver.verified(secret)}
    assert set(by_type) == {"edition.paused", "complaint.recorded", "subscriber.unsubscribed"}
    assert by_type["edition.paused"]["edition"] == {
        "id": edition_id, "subject": "Spring", "state": "paused",
        "reason": "staff: checking a link"}
    assert by_type["complaint.recorded"]["bounce"]["class"] == "complaint"
    assert by_type["complaint.recorded"]["subscriber"]["email"] == "gus@example.org"
    assert by_type["subscriber.unsubscribed"]["channel"] == "complaint"


def test_an_erasure_takes_the_address_out_of_waiting_events(rig, receiver) -> None:
    endpoint_id, secret = register(receiver.url, [events.CONFIRMED, events.ERASED])
    reader = readers.make("hanna@example.org", "confirmed")  # no worker yet: it waits
    with transaction() as session:
        subscriber = session.get(type(reader), reader.id)
        assert subscriber is not None
        privacy.erase(session, subscriber, by="test")
    rig.user_worker()

    wait_for(lambda: receiver.count() >= 2 and all_delivered(), what=deliveries)
    assert b"hanna" not in b"".join(r.body for r in receiver.requests)
    payloads = {p["type"]: p["data"] for p in receiver.verified(secret)}
    assert payloads["subscriber.confirmed"]["subscriber"] == {
        "id": reader.public_id, "erased": True}
    assert payloads["subscriber.erased"]["subscriber"]["id"] == reader.public_id
    assert len(payloads["subscriber.erased"]["address_hash"]) == 64
    assert len(attempts(endpoint_id)) == 2


def test_an_endpoint_failing_for_a_day_is_disabled_with_an_alert(rig, receiver) -> None:
    receiver.statuses = [500] * 10
    endpoint_id, _ = register(receiver.url, [events.SUBSCRIBED])
    readers.make("ida@example.org", "pending")
    settings = WebhookSettings(webhook_allowed_hosts=["127.0.0.1"])
    [delivery] = deliveries()
    assert sending.deliver(delivery.id, settings=settings) == "failed"
    with transaction() as session:  # as if that first failure had been a day ago
        session.execute(update(WebhookEndpoint).values(
            failing_since=utcnow() - dt.timedelta(hours=25)))
        session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))
    assert sending.deliver(delivery.id, settings=settings) == "failed"

    with transaction() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None and not endpoint.enabled
        assert "after 24 h of failures" in endpoint.disabled_reason
        found = alerts.evaluate(session, get_settings(), queues=[], workers=[])
        [alert] = [a for a in found if a.name == "webhook_disabled"]
        assert receiver.url in alert.message
        # Disabled, it hears of nothing new, and what waits is not attempted.
        assert sending.sweep(session, settings=settings) == 0
    readers.make("jan@example.org", "pending")
    assert len(deliveries()) == 1
    assert sending.deliver(delivery.id, settings=settings) == "not due"

    with transaction() as session:  # staff enable it again: what waited is due now
        endpoints.enable(session, endpoint_id, by="test")
    receiver.statuses = []
    with transaction() as session:
        assert sending.sweep(session, settings=settings) == 1
    assert sending.deliver(delivery.id, settings=settings) == "delivered"
    with transaction() as session:
        assert not [a for a in alerts.evaluate(session, get_settings(), queues=[], workers=[])
                    if a.name == "webhook_disabled"]


def test_given_up_after_the_window_then_redelivered_by_hand(rig, receiver) -> None:
    receiver.statuses = [500]
    register(receiver.url, [events.SUBSCRIBED])
    readers.make("kai@example.org", "pending")
    settings = WebhookSettings(webhook_allowed_hosts=["127.0.0.1"], webhook_retry_hours=0.0001)
    [delivery] = deliveries()
    assert sending.deliver(delivery.id, settings=settings) == "failed"
    assert deliveries()[0].state == DeliveryState.failed  # the next wait fell past the window

    with transaction() as session:
        sending.redeliver(session, delivery.id, by="staff@example.org")
    assert sending.deliver(delivery.id, settings=settings) == "delivered"
    assert sending.deliver(delivery.id, settings=settings) == "not due"  # a second copy
    assert receiver.count() == 2 and len(set(receiver.message_ids())) == 1
