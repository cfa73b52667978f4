"""SendGrid (ECDSA), Mailgun (HMAC, replays) and Postmark (basic auth): a valid request
applies; a bad signature, a replay or wrong credentials is refused with a 4xx and changes
nothing."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest

from mailer.bounces.actions import alert_counts
from mailer.bounces.models import BounceClass
from tests.support.bounce_mail import (
    bounces,
    events_of,
    make_delivery,
    make_reader,
    make_sent_edition,
    newsletter_id,
    status_of,
    suppressed,
)
from tests.support.webhooks import (
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    WebhookSite,
    fixture,
    mailgun_sign,
    make_sendgrid_key,
    sendgrid_headers,
    serve_webhooks,
)


@pytest.fixture
def site(clean, monkeypatch) -> Iterator[WebhookSite]:  # type: ignore[no-untyped-def]
    with serve_webhooks(monkeypatch) as served:
        yield served


def reader_with_delivery(email: str) -> tuple[int, int, int, str]:
    reader = make_reader(email)
    edition = make_sent_edition()
    delivery = make_delivery(edition, reader)
    return reader, edition, delivery, newsletter_id(edition, delivery)


# --- SendGrid ---------------------------------------------------------------------------------


def test_sendgrid_signed_events_apply_once(site) -> None:
    gone, _, gone_delivery, gone_id = reader_with_delivery("gone@example.net")
    other, other_edition, _, other_id = reader_with_delivery("other@example.net")
    body = fixture("sendgrid-events.json", RECIPIENT="gone@example.net",
                   OTHER_RCPT="other@example.net", OTHER_MSGID=other_id,
                   MESSAGE_ID=gone_id).encode()

    answer = site.post("sendgrid", body, sendgrid_headers(site.sendgrid_key, body))

    assert answer.status_code == 200, answer.text
    assert answer.json()["recorded"] == 3 and answer.json()["ignored"] == 1  # delivered
    by_class = {b.bounce_class: b for b in bounces()}
    assert set(by_class) == {BounceClass.hard, BounceClass.policy, BounceClass.delayed}
    assert by_class[BounceClass.hard].delivery_id == gone_delivery
    assert suppressed("gone@example.net").reason == "hard_bounce"
    assert suppressed("other@example.net") is None and events_of(other) == []
    assert alert_counts(other_edition) == {"policy_rejections": 1}

    # The same request again, freshly signed (a replay within the window): refused.
    replay = site.post("sendgrid", body, sendgrid_headers(site.sendgrid_key, body))
    assert replay.status_code == 409 and len(bounces()) == 3
    assert [e.kind for e in events_of(gone)] == ["suppressed"]


def test_sendgrid_bad_signatures_and_old_timestamps_are_refused(site) -> None:
    reader, _, _, msg_id = reader_with_delivery("gone@example.net")
    body = fixture("sendgrid-events.json", RECIPIENT="gone@example.net",
                   OTHER_RCPT="x@example.net", OTHER_MSGID="<x@example.net>",
                   MESSAGE_ID=msg_id).encode()
    other_key, _ = make_sendgrid_key()
    signed = sendgrid_headers(site.sendgrid_key, body)
    attempts = {
        "someone else's key": sendgrid_headers(other_key, body),
        "body changed": (signed, body.replace(b"5.1.1", b"5.1.2")),
        "timestamp changed": {**signed, "X-Twilio-Email-Event-Webhook-Timestamp": "1"},
        "old": sendgrid_headers(site.sendgrid_key, body, int(time.time()) - 7200),
        "no signature": {"Content-Type": "application/json"},
        "garbage signature": {**signed, "X-Twilio-Email-Event-Webhook-Signature": "%%%"},
    }
    for what, attempt in attempts.items():
        headers, sent = attempt if isinstance(attempt, tuple) else (attempt, body)
        answer = site.post("sendgrid", sent, headers)
        assert answer.status_code == 403, (what, answer.text)
    assert bounces() == [] and events_of(reader) == []


# --- Mailgun ----------------------------------------------------------------------------------


def test_mailgun_signed_failure_applies_and_replays_are_refused(site) -> None:
    reader, _, delivery, msg_id = reader_with_delivery("gone@example.net")
    payload = fixture("mailgun-failed-permanent.json", RECIPIENT="gone@example.net",
                      MESSAGE_ID_BARE=msg_id.strip("<>"))
    body = mailgun_sign(payload, token="a" * 50)

    answer = site.post("mailgun", body)

    assert answer.status_code == 200, answer.text
    [bounce] = bounces()
    assert (bounce.bounce_class, bounce.delivery_id, bounce.remote_mta) == ("hard", delivery,
                                                                            "mx.example.net")
    assert suppressed("gone@example.net").reason == "hard_bounce"

    # The captured request again: its token was used.
    assert site.post("mailgun", body).status_code == 409
    # The same event under a fresh, valid signature: the event id was seen.
    assert site.post("mailgun", mailgun_sign(payload)).status_code == 409
    assert len(bounces()) == 1 and len(events_of(reader)) == 1


def test_mailgun_bad_or_old_signatures_are_refused(site) -> None:
    reader, _, _, msg_id = reader_with_delivery("gone@example.net")
    payload = fixture("mailgun-failed-permanent.json", RECIPIENT="gone@example.net",
                      MESSAGE_ID_BARE=msg_id.strip("<>"))
    wrong_key = mailgun_sign(payload, key="key-not-ours")
    old = mailgun_sign(payload, timestamp=int(time.time()) - 7200)
    tampered = json.loads(mailgun_sign(payload))
    tampered["signature"]["timestamp"] = str(int(tampered["signature"]["timestamp"]) + 1)
    unsigned = json.loads(payload)
    del unsigned["signature"]
    for what, body in [("wrong key", wrong_key), ("old", old),
                       ("tampered", json.dumps(tampered).encode()),
                       ("unsigned", json.dumps(unsigned).encode())]:
        answer = site.post("mailgun", body)
        assert answer.status_code == 403, (what, answer.text)
    assert bounces() == [] and suppressed("gone@example.net") is None


def test_mailgun_temporary_failures_are_only_a_delay(site) -> None:
    reader, _, _, msg_id = reader_with_delivery("slow@example.net")
    payload = json.loads(fixture("mailgun-failed-permanent.json", RECIPIENT="slow@example.net",
                                 MESSAGE_ID_BARE=msg_id.strip("<>")))
    payload["event-data"].update({"severity": "temporary", "reason": "generic"})
    payload["event-data"]["delivery-status"].update({"code": 452, "message": "4.2.2 over quota"})
    answer = site.post("mailgun", mailgun_sign(json.dumps(payload)))
    assert answer.status_code == 200
    assert [b.bounce_class for b in bounces()] == [BounceClass.delayed]
    assert events_of(reader) == []


# --- Postmark ---------------------------------------------------------------------------------


def test_postmark_bounce_and_complaint_with_basic_auth(site) -> None:
    gone = make_reader("gone@example.net")
    angry = make_reader("angry@example.net")
    auth = (POSTMARK_USER, POSTMARK_PASSWORD)

    bounce = site.post("postmark", fixture("postmark-bounce.json",
                                               RECIPIENT="gone@example.net"), auth=auth)
    complaint = site.post("postmark", fixture("postmark-spam-complaint.json",
                                                  RECIPIENT="angry@example.net"), auth=auth)

    assert (bounce.status_code, complaint.status_code) == (200, 200), complaint.text
    assert suppressed("gone@example.net").reason == "hard_bounce"
    assert [b.attribution for b in bounces()] == ["recipient", "recipient"]
    assert status_of(angry) == "unsubscribed" and suppressed("angry@example.net") is not None
    assert [e.kind for e in events_of(gone)] == ["suppressed"]

    replay = site.post("postmark", fixture("postmark-bounce.json",
                                               RECIPIENT="gone@example.net"), auth=auth)
    assert replay.status_code == 409 and len(bounces()) == 2


def test_postmark_wrong_credentials_are_refused(site) -> None:
    reader = make_reader("gone@example.net")
    body = fixture("postmark-bounce.json", RECIPIENT="gone@example.net")
    for auth in [None, (POSTMARK_USER, "wrong"), ("wrong", POSTMARK_PASSWORD)]:
        answer = site.post("postmark", body, auth=auth)
        assert answer.status_code == 401 and "WWW-Authenticate" in answer.headers
    not_basic = site.post("postmark", body, {
        "Authorization": "Bearer " + base64.b64encode(
            f"{POSTMARK_USER}:{POSTMARK_PASSWORD}".encode()).decode()})
    assert not_basic.status_code == 401
    assert bounces() == [] and events_of(reader) == []


def test_unknown_providers_and_oversized_bodies(site) -> None:
    assert site.post("sparkpost", b"{}").status_code == 404
    huge = b"[" + b'{"event":"bounce"},' * 200_000 + b"{}]"
    assert site.post("sendgrid", huge).status_code == 413
