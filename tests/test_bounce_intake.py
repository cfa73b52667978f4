"""The one intake path (mailer.bounces.intake.receive) and the rules it applies: who is
suppressed, counted, alerted about — and all the mail that must change nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, update

from mailer.bounces.actions import alert_counts, record_bounce
from mailer.bounces.intake import receive
from mailer.bounces.models import Bounce, BounceClass
from mailer.bounces.rates import edition_rates
from mailer.config import get_settings
from mailer.db import transaction, utcnow
from mailer.deliveries.models import Delivery
from tests.support.bounce_mail import (
    arf,
    bounces,
    dsn,
    events_of,
    make_delivery,
    make_reader,
    make_sent_edition,
    newsletter_id,
    original_headers,
    plain_mail,
    status_of,
    suppressed,
    verp_of,
)
from tests.support.bounce_reading import OURS
from tests.support.factories import BOUNCES, stack_keys

USER_UNKNOWN = "550 5.1.1 <{}>: Recipient address rejected: User unknown in virtual mailbox table"
MAILBOX_FULL = "552 5.2.2 <{}>: Mailbox full, quota exceeded"
BLOCKED = "550 5.7.1 Service unavailable; client [192.0.2.7] blocked using zen.spamhaus.org"


def take_in(raw: bytes, envelope_to: list[str] | None = None, source: str = "mx"):  # type: ignore[no-untyped-def]
    with transaction() as session:
        return receive(session, raw=raw, ours=OURS, source=source,
                       bounces=BOUNCES, keys=stack_keys(),
                       envelope_to=envelope_to or [])


def newsletter_to(email: str, status: str = "sent") -> tuple[int, int, int]:
    """A reader who was sent an edition: (subscriber id, edition id, delivery id)."""
    reader = make_reader(email)
    edition = make_sent_edition()
    return reader, edition, make_delivery(edition, reader, status)


def bounce_of(email: str, edition: int, delivery: int, diagnostic: str,
              status: str, action: str = "failed") -> tuple[bytes, list[str]]:
    verp = verp_of(delivery)
    raw = dsn(to_verp=verp, recipients=[(email, action, status, diagnostic.format(email))],
              original=original_headers(email, newsletter_id(edition, delivery), verp))
    return raw, [verp]


def test_a_hard_bounce_suppresses_at_once_with_a_consent_event_and_once_only(clean) -> None:
    reader, edition, delivery = newsletter_to("gone@example.net")
    raw, envelope = bounce_of("gone@example.net", edition, delivery, USER_UNKNOWN, "5.1.1")

    result = take_in(raw, envelope)

    assert result.kind == "dsn" and not result.refused
    [bounce] = bounces()
    assert bounce.bounce_class == BounceClass.hard and bounce.source == "mx"
    assert (bounce.delivery_id, bounce.edition_id, bounce.subscriber_id) == (delivery, edition,
                                                                              reader)
    assert bounce.attribution == "verp" and bounce.action == "suppressed"
    assert bounce.status_code == "5.1.1" and "User unknown" in bounce.diagnostic
    assert 0 < len(bounce.raw_excerpt) <= 8 * 1024 and bounce.fingerprint == result.fingerprint
    row = suppressed("gone@example.net")
    assert row is not None and row.reason == "hard_bounce"
    assert f"bounce #{bounce.id} via mx" in row.evidence
    [event] = events_of(reader)
    assert event.kind == "suppressed" and event.detail["reason"] == "hard_bounce"

    # The same mail again (a re-import, a redelivered task): nothing new at all.
    again = take_in(raw, envelope)
    assert again.recorded == [] and again.repeats == 1
    assert "already recorded" in again.summary
    assert len(bounces()) == 1 and len(events_of(reader)) == 1


def test_soft_bounces_suppress_on_the_third_distinct_edition(clean) -> None:
    reader = make_reader("full@example.net")
    actions = []
    for n in range(3):
        edition = make_sent_edition()
        delivery = make_delivery(edition, reader)
        raw, envelope = bounce_of("full@example.net", edition, delivery, MAILBOX_FULL, "5.2.2")
        actions.append(take_in(raw, envelope).recorded[0].action)
        if n == 0:
            # A second DSN for the same delivery (another MTA's copy) does not count
            # twice: it is kept as a repeat of the first and acts on nobody.
            other = dsn(to_verp=envelope[0], recipients=[
                ("full@example.net", "failed", "4.2.2", "452 4.2.2 Over quota")],
                reporting_mta="relay.example.net")
            assert take_in(other, envelope).recorded[0].action.startswith(
                "nothing: repeat of #")
            assert suppressed("full@example.net") is None
    assert actions == ["counted: 1 of 3 soft", "counted: 2 of 3 soft", "suppressed"]
    row = suppressed("full@example.net")
    assert row is not None and row.reason == "soft_bounces"
    assert "3 soft bounces on distinct editions" in row.evidence
    assert [e.kind for e in events_of(reader)] == ["suppressed"]


def test_a_good_delivery_between_soft_bounces_resets_the_count(clean) -> None:
    reader = make_reader("sometimes@example.net")
    now = utcnow()

    def soft_bounce_of_edition(hours_ago: int) -> str:
        edition = make_sent_edition()
        sent = now - dt.timedelta(hours=hours_ago)
        delivery = make_delivery(edition, reader, sent_at=sent)
        result = take_in(*bounce_of("sometimes@example.net", edition, delivery, MAILBOX_FULL,
                                    "5.2.2"))
        with transaction() as session:  # the DSN came back ten minutes after the send
            session.execute(update(Bounce).where(Bounce.delivery_id == delivery)
                            .values(received_at=sent + dt.timedelta(minutes=10)))
        return result.recorded[0].action

    assert soft_bounce_of_edition(hours_ago=9) == "counted: 1 of 3 soft"
    assert soft_bounce_of_edition(hours_ago=7) == "counted: 2 of 3 soft"
    make_delivery(make_sent_edition(), reader, sent_at=now - dt.timedelta(hours=5))  # got through
    assert soft_bounce_of_edition(hours_ago=3) == "counted: 1 of 3 soft"
    assert soft_bounce_of_edition(hours_ago=1) == "counted: 2 of 3 soft"
    assert suppressed("sometimes@example.net") is None


def test_soft_bounces_older_than_the_window_do_not_count(clean) -> None:
    reader = make_reader("old@example.net")
    for _ in range(2):
        edition = make_sent_edition()
        delivery = make_delivery(edition, reader, sent_at=utcnow() - dt.timedelta(days=40))
        take_in(*bounce_of("old@example.net", edition, delivery, MAILBOX_FULL, "5.2.2"))
    with transaction() as session:
        days = get_settings().bounces.soft_bounce_days
        session.execute(update(Bounce).values(
            received_at=utcnow() - dt.timedelta(days=days + 1)))
    edition = make_sent_edition()
    delivery = make_delivery(edition, reader)
    result = take_in(*bounce_of("old@example.net", edition, delivery, MAILBOX_FULL, "5.2.2"))
    assert result.recorded[0].action == "counted: 1 of 3 soft"
    assert suppressed("old@example.net") is None


def test_a_policy_rejection_never_suppresses_and_raises_the_alert_counter(clean) -> None:
    reader, edition, delivery = newsletter_to("reader@example.net")
    result = take_in(*bounce_of("reader@example.net", edition, delivery, BLOCKED, "5.7.1"))
    [recorded] = result.recorded
    assert recorded.bounce_class == BounceClass.policy
    assert recorded.action == "alerted: policy rejection"
    assert suppressed("reader@example.net") is None and events_of(reader) == []
    assert status_of(reader) == "confirmed"
    assert alert_counts()["policy_rejections"] == 1
    assert alert_counts(edition) == {"policy_rejections": 1}


def test_an_arf_complaint_unsubscribes_and_suppresses(clean) -> None:
    reader, edition, delivery = newsletter_to("angry@example.net")
    verp = verp_of(delivery)
    raw = arf(to="fbl@bounces.cep-probation.example.org", reported_rcpt="angry@example.net",
              original=original_headers("angry@example.net", newsletter_id(edition, delivery),
                                        verp))
    result = take_in(raw)
    assert result.kind == "arf"
    [recorded] = result.recorded
    assert recorded.bounce_class == BounceClass.complaint
    assert recorded.action == "unsubscribed and suppressed"
    assert status_of(reader) == "unsubscribed"
    assert suppressed("angry@example.net").reason == "complaint"
    kinds = [(e.kind, e.channel) for e in events_of(reader)]
    assert kinds == [("unsubscribed", "complaint"), ("suppressed", None)]
    assert alert_counts(edition) == {"complaints": 1}


# An RFC 6591 auth-failure (DMARC forensic) report is about a message claiming our domain:
# not a complaint, not a bounce, and no alert about a reader either.
@pytest.mark.parametrize("feedback_type,expected", [("not-spam", BounceClass.not_a_bounce),
                                                    ("auth-failure", BounceClass.not_a_bounce)])
def test_arf_reports_that_are_no_complaint(clean, feedback_type, expected) -> None:
    reader, edition, delivery = newsletter_to("reader@example.net")
    raw = arf(to="fbl@bounces.cep-probation.example.org", reported_rcpt="reader@example.net",
              original=original_headers("reader@example.net", newsletter_id(edition, delivery),
                                        verp_of(delivery)), feedback_type=feedback_type)
    result = take_in(raw)
    assert {r.bounce_class for r in result.recorded} == {expected}
    assert status_of(reader) == "confirmed" and suppressed("reader@example.net") is None
    assert events_of(reader) == []


def test_a_delay_warning_is_kept_and_acts_on_nobody(clean) -> None:
    reader, edition, delivery = newsletter_to("slow@example.net")
    result = take_in(*bounce_of("slow@example.net", edition, delivery,
                                "451 4.4.1 connection timed out, still trying", "4.4.1",
                                action="delayed"))
    [recorded] = result.recorded
    assert recorded.bounce_class == BounceClass.delayed and recorded.action == "nothing"
    assert suppressed("slow@example.net") is None and events_of(reader) == []


def test_a_forged_verp_token_attributes_nobody_even_for_a_known_address(clean) -> None:
    reader, edition, delivery = newsletter_to("victim@example.net")
    genuine = verp_of(delivery)
    forged = genuine[:genuine.index("-") + 1] + "a" * 16 + genuine[genuine.index("@"):]
    raw = dsn(to_verp=forged, recipients=[
        ("victim@example.net", "failed", "5.1.1", USER_UNKNOWN.format("victim@example.net"))],
        original=original_headers("victim@example.net", "<spam.123@elsewhere.example>",
                                  forged))
    result = take_in(raw, [forged])
    [recorded] = result.recorded
    assert recorded.bounce_class == BounceClass.hard
    assert recorded.attribution == "none" and recorded.action == "nothing: unverified"
    [bounce] = bounces()
    assert bounce.subscriber_id is None and bounce.delivery_id is None
    assert "forged" in bounce.attribution_note
    assert (bounce.trust, bounce.unverified_reason) == ("unverified", "forged-token")
    assert bounce.claimed_subscriber_id == reader  # who it names, for staff to judge
    assert suppressed("victim@example.net") is None and events_of(reader) == []


def _vacation(to: str) -> bytes:
    return plain_mail(to=to, subject="Out of office: CEP Newsletter",
                      body="I am out of the office until 3 March with limited access to email.",
                      headers={"Auto-Submitted": "auto-replied", "X-Autoreply": "yes"},
                      sender="Reader <reader@example.net>")


def _reply(to: str) -> bytes:
    return plain_mail(to=to, subject="Re: CEP Newsletter",
                      body="Thank you for the newsletter, the article on electronic "
                           "monitoring was very useful.\n\nBest regards, Anna",
                      sender="Reader <reader@example.net>")


def _malformed(to: str) -> bytes:
    return (f"From: MAILER-DAEMON@mx.example.net\r\nTo: {to}\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="XX'
            "\r\n\r\n--XX\r\nContent-Type: message/delivery-status\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n%%%not base64\xff\xfe\r\n"
            "--YY--\r\n\x00\x01binary garbage\r\n").encode("latin-1")


def _truncated(to: str, delivery: int, edition: int) -> bytes:
    whole = dsn(to_verp=to, recipients=[
        ("reader@example.net", "failed", "5.1.1", USER_UNKNOWN.format("reader@example.net"))],
        original=original_headers("reader@example.net", newsletter_id(edition, delivery), to))
    return whole[:whole.index(b"I'm sorry")]


def _huge(to: str) -> bytes:
    head = plain_mail(to=to, subject="Undelivered Mail Returned to Sender", body="x")
    return head + b"A" * (get_settings().bounces.bounce_max_bytes + 1)


@pytest.mark.parametrize("make", [_vacation, _reply, _malformed, _truncated, _huge],
                         ids=["vacation", "ordinary-reply", "malformed-mime", "truncated-report",
                              "huge"])
def test_mail_that_is_no_usable_bounce_is_kept_and_changes_nothing(clean, make) -> None:
    reader, edition, delivery = newsletter_to("reader@example.net")
    verp = verp_of(delivery)
    raw = make(verp, delivery, edition) if make is _truncated else make(verp)

    result = take_in(raw, [verp])

    assert len(result.recorded) >= 1  # kept as evidence, never silently dropped
    classes = {r.bounce_class for r in result.recorded}
    assert classes <= {BounceClass.autoreply, BounceClass.not_a_bounce, BounceClass.unparsed,
                       BounceClass.delayed}, result.summary
    assert {r.action for r in result.recorded} == {"nothing"}
    assert all(b.raw_excerpt and len(b.raw_excerpt) <= 8 * 1024 for b in bounces())
    assert suppressed("reader@example.net") is None and events_of(reader) == []
    assert status_of(reader) == "confirmed"
    if make is _huge:
        assert result.kind == "refused" and "over the bounce size cap" in result.refused
        assert bounces()[0].diagnostic.startswith("refused:")
    if make is _reply:
        assert classes == {BounceClass.not_a_bounce}
    if make is _vacation:
        assert classes == {BounceClass.autoreply}


def test_backscatter_policy_rejections_do_not_alert(clean) -> None:
    raw = dsn(to_verp="bounces+nobody@bounces.cep-probation.example.org", recipients=[
        ("someone@example.net", "failed", "5.7.1", "550 5.7.1 Message rejected as spam")])
    result = take_in(raw, ["bounces+nobody@bounces.cep-probation.example.org"])
    assert result.recorded[0].bounce_class == BounceClass.policy
    assert result.recorded[0].action == "nothing: unverified"
    assert alert_counts() == {}


def test_edition_rates_count_each_delivery_once_and_flag_complaint_thresholds(clean) -> None:
    edition = make_sent_edition()
    readers = [make_reader(f"r{i}@example.net") for i in range(6)]
    now = utcnow()
    with transaction() as session:
        # 1000 accepted, 10 bounced at RCPT, 5 failed; filler deliveries need no subscriber.
        rows = [{"edition_id": edition, "subscriber_id": None, "state": "sent", "attempts": 1,
                 "sent_at": now, "updated_at": now} for _ in range(994)]
        rows += [{"edition_id": edition, "subscriber_id": None, "state": s, "attempts": 1,
                  "updated_at": now} for s in ["bounced"] * 10 + ["failed"] * 5]
        session.execute(insert(Delivery), rows)
    ids = [make_delivery(edition, r) for r in readers]  # 6 more sent: 1000 accepted

    def record(klass: BounceClass, delivery: int, n: int) -> None:
        with transaction() as session:
            record_bounce(session, bounces=BOUNCES, bounce_class=klass, source="test",
                          delivery_id=delivery, fingerprint=f"{klass}-{delivery}-{n}",
                          recipient="x@example.net")

    record(BounceClass.hard, ids[0], 1)
    record(BounceClass.hard, ids[0], 2)  # two DSNs, one delivery
    record(BounceClass.soft, ids[1], 1)
    record(BounceClass.policy, ids[2], 1)
    record(BounceClass.complaint, ids[3], 1)
    rates = edition_rates_now(edition)
    assert (rates["deliveries"], rates["answered"], rates["accepted"]) == (1015, 1015, 1000)
    assert (rates["hard"], rates["soft"], rates["policy"], rates["complaints"]) == (1, 1, 1, 1)
    assert rates["hard_bounce_rate"] == pytest.approx(1 / 1015)
    assert rates["bounce_rate"] == pytest.approx(2 / 1015)
    assert rates["complaint_rate"] == pytest.approx(0.001)
    assert rates["complaint_alert"] is True and rates["complaint_stop"] is False

    record(BounceClass.complaint, ids[4], 1)
    record(BounceClass.complaint, ids[5], 1)
    rates = edition_rates_now(edition)
    assert rates["complaints"] == 3 and rates["complaint_stop"] is True
    assert edition_rates_now(make_sent_edition())["complaint_rate"] == 0.0


def edition_rates_now(edition_id: int) -> dict:  # type: ignore[type-arg]
    with transaction() as session:
        return edition_rates(session, edition_id, get_settings().sending)
