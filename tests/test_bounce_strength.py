"""Evidence strength decides how fast a reader leaves (issue 9, section 3), end to end:
DSN mails through the real intake, on the real databases.

A hard bounce on strong evidence (a 5.1.x at RCPT, the address echoed with "user unknown",
a domain that does not exist) suppresses at once. On weak evidence (a wording alone, no
code, a reply after DATA) it suppresses nobody until a second hard or soft bounce of the
same address comes for a later edition.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from mailer.bounces.actions import record_bounce
from mailer.bounces.models import Bounce, BounceClass
from mailer.db import transaction, utcnow
from tests.support.bounce_mail import (
    dsn,
    events_of,
    make_delivery,
    make_reader,
    make_sent_edition,
    newsletter_id,
    original_headers,
    suppressed,
    verp_of,
)
from tests.support.factories import BOUNCES
from tests.test_bounce_intake import take_in

#: Outlook.com's answer for an address it does not have: a wording and a generic code.
WEAK = "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)"
STRONG = "550 5.1.1 <{}>: Recipient address rejected: User unknown in virtual mailbox table"
FULL = "552 5.2.2 <{}>: Mailbox full, quota exceeded"


def _bounce(email: str, reader: int, diagnostic: str, status: str, *,
            sent_at: dt.datetime | None = None) -> tuple[str, Bounce]:
    """Send the reader a new edition; its DSN comes back. → (action, the Bounce row)."""
    edition = make_sent_edition()
    delivery = make_delivery(edition, reader, sent_at=sent_at)
    verp = verp_of(delivery)
    raw = dsn(to_verp=verp, recipients=[(email, "failed", status, diagnostic.format(email))],
              original=original_headers(email, newsletter_id(edition, delivery), verp))
    [recorded] = take_in(raw, [verp]).recorded
    with transaction() as session:
        row = session.get(Bounce, recorded.bounce_id)
        assert row is not None
        if sent_at is not None:  # the DSN came back ten minutes after the send
            session.execute(update(Bounce).where(Bounce.id == row.id)
                            .values(received_at=sent_at + dt.timedelta(minutes=10)))
        session.expunge(row)
    return recorded.action, row


def test_strong_evidence_suppresses_at_once(clean) -> None:
    reader = make_reader("gone@example.net")
    action, row = _bounce("gone@example.net", reader, STRONG, "5.1.1")
    assert (row.bounce_class, row.evidence, action) == (BounceClass.hard, "strong", "suppressed")
    assert suppressed("gone@example.net").reason == "hard_bounce"


def test_a_weak_hard_bounce_suppresses_nobody_until_a_later_edition_repeats_it(clean) -> None:
    reader = make_reader("maybe@outlook.com")
    action, first = _bounce("maybe@outlook.com", reader, WEAK, "5.5.0")
    assert (first.bounce_class, first.evidence) == (BounceClass.hard, "weak")
    assert action == "counted: weak hard, 1 of 2"
    assert suppressed("maybe@outlook.com") is None and events_of(reader) == []

    action, second = _bounce("maybe@outlook.com", reader, WEAK, "5.5.0")
    assert action == "suppressed"
    row = suppressed("maybe@outlook.com")
    assert row is not None and row.reason == "hard_bounce"
    assert f"repeats bounce #{first.id}" in row.evidence
    assert [e.kind for e in events_of(reader)] == ["suppressed"]


def test_a_soft_bounce_of_a_later_edition_repeats_a_weak_hard_one(clean) -> None:
    reader = make_reader("full-or-gone@example.org")
    assert _bounce("full-or-gone@example.org", reader, WEAK, "5.5.0")[0] == (
        "counted: weak hard, 1 of 2")
    action, soft = _bounce("full-or-gone@example.org", reader, FULL, "5.2.2")
    assert soft.bounce_class == BounceClass.soft and action == "suppressed"
    row = suppressed("full-or-gone@example.org")
    assert row is not None and row.reason == "hard_bounce"
    assert "weak hard bounce" in row.evidence


def test_a_second_report_of_the_same_edition_is_no_repeat(clean) -> None:
    """Two DSNs about one delivery (our relay's and the remote's, say) are one piece of
    evidence, not two."""
    reader = make_reader("twice@outlook.com")
    edition = make_sent_edition()
    delivery = make_delivery(edition, reader)
    verp = verp_of(delivery)
    actions = []
    for reply in (WEAK, WEAK + " [AM6EUR05FT012.eop-eur05.prod.protection.outlook.com]"):
        raw = dsn(to_verp=verp, recipients=[("twice@outlook.com", "failed", "5.5.0", reply)],
                  original=original_headers("twice@outlook.com",
                                            newsletter_id(edition, delivery), verp))
        actions += [r.action for r in take_in(raw, [verp]).recorded]
    # The second is kept as a repeat of the first (one consequence per message we sent).
    assert actions[0] == "counted: weak hard, 1 of 2"
    assert actions[1].startswith("nothing: repeat of #")
    assert suppressed("twice@outlook.com") is None


def test_a_good_delivery_between_weak_hard_bounces_starts_over(clean) -> None:
    reader = make_reader("flaky@outlook.com")
    now = utcnow()
    _bounce("flaky@outlook.com", reader, WEAK, "5.5.0", sent_at=now - dt.timedelta(hours=6))
    make_delivery(make_sent_edition(), reader, sent_at=now - dt.timedelta(hours=3))  # got through
    action, _ = _bounce("flaky@outlook.com", reader, WEAK, "5.5.0",
                        sent_at=now - dt.timedelta(hours=1))
    assert action == "counted: weak hard, 1 of 2"
    assert suppressed("flaky@outlook.com") is None


def test_after_data_is_weak_even_with_5_1_1(clean) -> None:
    """A before-queue proxy's 5.1.1 given at end of DATA: hard, but only weakly."""
    reader = make_reader("proxy@example.it")
    diagnostic = ("550 5.1.1 <{}>: Recipient address rejected: User unknown "
                  "(in reply to end of DATA command)")
    action, row = _bounce("proxy@example.it", reader, diagnostic, "5.1.1")
    assert (row.evidence, action) == ("weak", "counted: weak hard, 1 of 2")


def test_callers_without_a_parser_get_the_strength_from_status_and_diagnostic(clean) -> None:
    """Provider webhooks and our own SMTP transaction pass a status and a reply only."""
    reader = make_reader("provider@example.net")
    with transaction() as session:
        strong = record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.hard,
                               source="ses", recipient="provider@example.net", status_code="5.1.1",
                               diagnostic="550 5.1.1 user unknown", subscriber_id=reader,
                               attribution="recipient", fingerprint="p1")
        weak = record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.hard,
                             source="postmark", recipient="provider@example.net", status_code="",
                             diagnostic="Address does not exist", subscriber_id=reader,
                             attribution="recipient", fingerprint="p2")
        soft = record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.soft, source="ses",
                             recipient="provider@example.net", status_code="5.2.2",
                             diagnostic="mailbox full", subscriber_id=reader,
                             attribution="recipient", fingerprint="p3")
        assert strong is not None and weak is not None and soft is not None
        assert (strong.evidence, weak.evidence, soft.evidence) == ("strong", "weak", "")
    with transaction() as session:
        assert session.scalars(select(Bounce.evidence).order_by(Bounce.id)).all() == [
            "strong", "weak", ""]
