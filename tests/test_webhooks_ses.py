"""Amazon SES through SNS: a signed notification applies; a bad signature, a certificate
off SNS's host, a topic not on the allow-list, an old timestamp or a replay is refused
with a 4xx and changes nothing; a subscription is confirmed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest

from mailer.bounces.webhooks import WebhookRefused
from mailer.bounces.webhooks.ses import SNSFetcher, is_sns_url
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
    TOPIC,
    WebhookSite,
    fixture,
    serve_webhooks,
    sns_notification,
)


@pytest.fixture
def site(clean, monkeypatch) -> Iterator[WebhookSite]:  # type: ignore[no-untyped-def]
    with serve_webhooks(monkeypatch) as served:
        yield served


def reader_with_delivery(email: str) -> tuple[int, int, str]:
    reader = make_reader(email)
    edition = make_sent_edition()
    delivery = make_delivery(edition, reader)
    return reader, delivery, newsletter_id(edition, delivery)


def test_a_signed_bounce_suppresses_and_its_replay_is_refused(site) -> None:
    reader, delivery, msg_id = reader_with_delivery("gone@example.net")
    body = json.dumps(site.sns.sign(sns_notification(
        fixture("ses-bounce-permanent.json", RECIPIENT="gone@example.net", MESSAGE_ID=msg_id))))

    answer = site.post("ses", body, {"x-amz-sns-message-type": "Notification"})

    assert answer.status_code == 200, answer.text
    assert answer.json()["recorded"] == 1
    [bounce] = bounces()
    assert (bounce.source, bounce.bounce_class, bounce.delivery_id) == ("ses", "hard", delivery)
    assert bounce.attribution == "message-id" and bounce.action == "suppressed"
    assert suppressed("gone@example.net").reason == "hard_bounce"
    assert [e.kind for e in events_of(reader)] == ["suppressed"]

    replay = site.post("ses", body)
    assert replay.status_code == 409 and "replay" in replay.json()["error"]
    assert len(bounces()) == 1 and len(events_of(reader)) == 1


def test_a_signed_complaint_unsubscribes_and_suppresses(site) -> None:
    reader, _, msg_id = reader_with_delivery("angry@example.net")
    body = json.dumps(site.sns.sign(sns_notification(
        fixture("ses-complaint.json", RECIPIENT="angry@example.net", MESSAGE_ID=msg_id),
        message_id="0b6c1c3e-2222-5555-8888-abcdefabcdef"), version="2"))
    answer = site.post("ses", body)
    assert answer.status_code == 200, answer.text
    assert status_of(reader) == "unsubscribed"
    assert suppressed("angry@example.net").reason == "complaint"


def _tampered(site, msg_id: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    signed = site.sns.sign(sns_notification(
        fixture("ses-bounce-permanent.json", RECIPIENT="victim@example.net", MESSAGE_ID=msg_id)))
    return {**signed, "Message": signed["Message"].replace("Permanent", "Permanent ")}


@pytest.mark.parametrize("attack", ["tampered", "bad-signature", "foreign-cert", "wrong-topic",
                                    "old", "unsigned", "signature-not-ascii",
                                    "signature-not-a-string"])
def test_forged_or_stale_notifications_are_refused_and_change_nothing(site, attack) -> None:
    reader, _, msg_id = reader_with_delivery("victim@example.net")
    good = site.sns.sign(sns_notification(
        fixture("ses-bounce-permanent.json", RECIPIENT="victim@example.net", MESSAGE_ID=msg_id)))
    message = {
        "tampered": lambda: _tampered(site, msg_id),
        "bad-signature": lambda: {**good, "Signature": good["Signature"][:-8] + "AAAAAAA="},
        # A certificate the attacker controls, on a host that only looks like SNS's.
        "foreign-cert": lambda: {**good, "SigningCertURL":
                                 "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem"},
        "wrong-topic": lambda: site.sns.sign(sns_notification(
            good["Message"], topic="arn:aws:sns:eu-west-1:999999999999:someone-else")),
        "old": lambda: site.sns.sign(sns_notification(
            good["Message"], timestamp=dt.datetime.now(dt.UTC) - dt.timedelta(hours=3))),
        "unsigned": lambda: {k: v for k, v in good.items() if k != "Signature"},
        # Not base64 at all (these answered 500: base64 refuses non-ASCII with a ValueError).
        "signature-not-ascii": lambda: {**good, "Signature": "ÎÎÎÎ" + good["Signature"][4:]},
        "signature-not-a-string": lambda: {**good, "Signature": {"\u00a1": None}},
    }[attack]()

    answer = site.post("ses", json.dumps(message))

    assert answer.status_code in (400, 403), answer.text
    assert bounces() == [] and events_of(reader) == []
    assert suppressed("victim@example.net") is None


def test_a_subscription_is_confirmed_through_the_fetcher_only_when_signed(site) -> None:
    subscribe_url = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
                     "&TopicArn=" + TOPIC + "&Token=2336412f37fb687f5d51e6e2425dacbba")
    message = {
        "Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e2425dacbba", "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": subscribe_url,
        "Timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    forged = site.post("ses", json.dumps({**site.sns.sign(message),
                                              "SubscribeURL": "https://evil.example/confirm"}))
    assert forged.status_code == 403 and subscribe_url not in site.sns.fetched

    answer = site.post("ses", json.dumps(site.sns.sign(message)),
                           {"x-amz-sns-message-type": "SubscriptionConfirmation"})
    assert answer.status_code == 200, answer.text
    assert site.sns.fetched.count(subscribe_url) == 1


def test_certificate_urls_must_be_on_sns_hosts() -> None:
    good = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"
    assert is_sns_url(good, pem=True)
    assert is_sns_url("https://sns.cn-north-1.amazonaws.com.cn/x.pem", pem=True)
    for bad in ("http://sns.eu-west-1.amazonaws.com/x.pem",
                "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
                "https://evil.example/sns.eu-west-1.amazonaws.com/x.pem",
                "https://user@sns.eu-west-1.amazonaws.com/x.pem",
                "https://sns.eu-west-1.amazonaws.com:8443/x.pem",
                "https://s3.amazonaws.com/x.pem",
                "https://sns.eu-west-1.amazonaws.com/x.txt"):
        assert not is_sns_url(bad, pem=True), bad
    fetched: list[str] = []
    fetcher = SNSFetcher(get=lambda url: fetched.append(url) or b"")
    with pytest.raises(WebhookRefused):
        fetcher.certificate("https://evil.example/cert.pem")
    assert fetched == []  # refused before anything is fetched


def test_a_nul_in_a_signed_notification_is_dropped_not_a_500(site) -> None:
    # JSON may carry "\u0000"; PostgreSQL stores no NUL (test_fuzz_routes found the 500).
    reader, _, msg_id = reader_with_delivery("nul@example.net")
    body = json.dumps(site.sns.sign(sns_notification(
        fixture("ses-bounce-permanent.json", RECIPIENT="nul@example.net", MESSAGE_ID=msg_id),
        message_id="0b6c1c3e-\u0000-nul")))
    answer = site.post("ses", body, {"x-amz-sns-message-type": "Notification"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["recorded"] == 1
    assert suppressed("nul@example.net").reason == "hard_bounce"
