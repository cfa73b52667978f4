"""The ledger's group commit against the real databases: record, read the edition's state
and claim, as one unit (on PostgreSQL one autocommitted statement, on SQLite one
transaction). What a batch relies on: claims in id order up to the limit, readers who left
skipped, nothing claimed once the edition stops, and a group whose claims someone else took
back applied not at all."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from mailer.bounces.models import BounceClass
from mailer.config import BounceSettings, SendingSettings
from mailer.db import transaction, utcnow
from mailer.deliveries.models import Delivery, DeliveryState
from mailer.delivery.ledger import ClaimsLost, Ledger, Outcome
from mailer.editions.models import Edition
from mailer.insight.models import EditionDeferral
from mailer.lists.models import Subscription
from tests.support.factories import make_edition, make_subscribers, start

HOLDER = 4242


def _rows(edition_id: int) -> list[tuple[int, str, int | None, int]]:
    with transaction() as session:
        return [tuple(r) for r in session.execute(  # type: ignore[misc]
            select(Delivery.id, Delivery.state, Delivery.holder_id, Delivery.attempts)
            .where(Delivery.edition_id == edition_id).order_by(Delivery.id))]


def _sent(delivery_id: int, attempts: int = 1) -> Outcome:
    return Outcome(delivery_id, DeliveryState.sent, 250, "250 ok", attempts, "sent", utcnow())


@pytest.fixture(autouse=True)
def batches_kept_back(monkeypatch) -> list[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    """The send starts as staff start it, but its batches are not handed to the broker:
    the session's worker (alive from earlier tests) would claim them, and here the test
    is the only sender, driving the ledger itself. The batches it would have queued are
    kept, and checked."""
    from mailer import tasks

    kept: list[tuple[int, int, int]] = []

    def keep(task: str, calls: object, **_: object) -> int:
        assert task == tasks.SEND_BATCH
        kept.extend(calls)  # type: ignore[call-overload]
        return len(kept)

    monkeypatch.setattr(tasks, "publish_many", keep)
    return kept


def _edition_with(n: int) -> tuple[int, list[int]]:
    make_subscribers(n)
    edition_id = make_edition()
    start(edition_id)
    return edition_id, [r[0] for r in _rows(edition_id)]


def test_a_group_records_claims_in_order_and_skips_who_left(clean, batches_kept_back) -> None:
    edition_id, ids = _edition_with(10)
    assert batches_kept_back == [(edition_id, ids[0], ids[-1])]  # one batch would have gone
    with transaction() as session:  # the fourth reader unsubscribes during the send
        sub = session.scalar(select(Delivery.subscriber_id).where(Delivery.id == ids[3]))
        session.execute(update(Subscription).where(Subscription.subscriber_id == sub)
                        .values(status="unsubscribed"))
    ledger = Ledger(edition_id, HOLDER, SendingSettings(), BounceSettings())
    try:
        state, (claims, reached), skipped = ledger.commit_group(
            [], claim_after=ids[0] - 1, last_id=ids[-1], limit=4, now=utcnow())
        assert state == "sending"
        assert [c.reader.delivery_id for c in claims] == [ids[0], ids[1], ids[2]]
        assert [c.attempts for c in claims] == [1, 1, 1]
        assert claims[0].reader.email == "reader00000@example.net"
        assert (reached, skipped) == (ids[3], 1)
        # Record them and claim the next four, in one go.
        state, (claims, reached), skipped = ledger.commit_group(
            [_sent(c.reader.delivery_id) for c in claims], claim_after=reached,
            last_id=ids[-1], limit=4, now=utcnow())
        assert [c.reader.delivery_id for c in claims] == ids[4:8]
        assert (reached, skipped) == (ids[7], 0)
    finally:
        ledger.close()
    rows = {i: (s, h, a) for i, s, h, a in _rows(edition_id)}
    assert [rows[i] for i in ids[:3]] == [("sent", None, 1)] * 3
    assert rows[ids[3]][0] == "skipped"
    assert [rows[i] for i in ids[4:8]] == [("sending", HOLDER, 1)] * 4
    assert [rows[i][0] for i in ids[8:]] == ["queued", "queued"]


def test_a_group_whose_claims_were_taken_back_is_not_applied_at_all(clean) -> None:
    edition_id, ids = _edition_with(6)
    ledger = Ledger(edition_id, HOLDER, SendingSettings(), BounceSettings())
    try:
        _, (claims, reached), _ = ledger.commit_group(
            [], claim_after=ids[0] - 1, last_id=ids[-1], limit=3, now=utcnow())
        assert len(claims) == 3
        with transaction() as session:  # declared gone: its second claim queued again
            session.execute(update(Delivery).where(Delivery.id == ids[1])
                            .values(state="queued", holder_id=None))
        with pytest.raises(ClaimsLost):
            ledger.commit_group([_sent(c.reader.delivery_id) for c in claims],
                                claim_after=reached, last_id=ids[-1], limit=3, now=utcnow())
    finally:
        ledger.close()
    rows = {i: (s, h) for i, s, h, _ in _rows(edition_id)}
    # Nothing of that group: not the outcomes still ours, not the next claims.
    assert [rows[i] for i in ids] == [("sending", HOLDER), ("queued", None),
                                      ("sending", HOLDER), ("queued", None),
                                      ("queued", None), ("queued", None)]


def test_no_claims_once_the_edition_stops(clean) -> None:
    edition_id, ids = _edition_with(4)
    ledger = Ledger(edition_id, HOLDER, SendingSettings(), BounceSettings())
    try:
        _, (claims, reached), _ = ledger.commit_group(
            [], claim_after=ids[0] - 1, last_id=ids[-1], limit=2, now=utcnow())
        with transaction() as session:
            session.execute(update(Edition).where(Edition.id == edition_id)
                            .values(state="paused"))
        state, (more, _), _ = ledger.commit_group(
            [_sent(c.reader.delivery_id) for c in claims], claim_after=reached,
            last_id=ids[-1], limit=2, now=utcnow())
    finally:
        ledger.close()
    assert (state, more) == ("paused", [])
    assert [s for _, s, _, _ in _rows(edition_id)] == ["sent", "sent", "queued", "queued"]


def _deferred(delivery_id: int, at: dt.datetime, code: int | None = 451) -> Outcome:
    return Outcome(delivery_id, DeliveryState.deferred, code, f"{code} 4.7.1 try later",
                   1, "deferred", at)


def _deferrals(edition_id: int) -> dict[tuple[str, str], int]:
    with transaction() as session:
        return {(f"{m:%H:%M}", d): n for m, d, n in session.execute(
            select(EditionDeferral.minute, EditionDeferral.domain, EditionDeferral.deferrals)
            .where(EditionDeferral.edition_id == edition_id))}


def test_a_deferral_is_counted_once_when_its_row_moves_to_deferred(clean) -> None:
    """Per minute of the answer and the reader's domain, by the statement that records it:
    the same outcomes recorded again, a group whose claims were taken back, a connection
    that failed under a message and a claim given back as deferred add nothing."""
    make_subscribers(8, domains=2)  # d0.example.net, d1.example.net in turn
    edition_id = make_edition()
    start(edition_id)
    ids = [r[0] for r in _rows(edition_id)]
    nine = utcnow().replace(hour=9, minute=14, second=5)
    ledger = Ledger(edition_id, HOLDER, SendingSettings(), BounceSettings())
    try:
        _, (claims, reached), _ = ledger.commit_group(
            [], claim_after=ids[0] - 1, last_id=ids[-1], limit=4, now=utcnow())
        first = [_deferred(ids[0], nine), _deferred(ids[1], nine),
                 _deferred(ids[2], nine + dt.timedelta(seconds=50)), _sent(ids[3])]
        _, (claims, reached), _ = ledger.commit_group(
            first, claim_after=reached, last_id=ids[-1], limit=4, now=utcnow())
        with pytest.raises(ClaimsLost):  # a task run twice: the rows are not sending any more
            ledger.commit_group(first, claim_after=None, last_id=ids[-1], limit=4, now=utcnow())
        assert _deferrals(edition_id) == {("09:14", "d0.example.net"): 2,
                                          ("09:14", "d1.example.net"): 1}
        with transaction() as session:  # declared gone: one of the next claims queued again
            session.execute(update(Delivery).where(Delivery.id == ids[7])
                            .values(state="queued", holder_id=None))
        with pytest.raises(ClaimsLost):
            ledger.commit_group([_deferred(i, nine) for i in ids[4:8]], claim_after=None,
                                last_id=ids[-1], limit=4, now=utcnow())
        assert sum(_deferrals(edition_id).values()) == 3
        # The rest, in a group with a hard bounce (PostgreSQL records it statement by
        # statement, in a transaction): a deferral a minute later and a failed connection.
        hard = Outcome(ids[4], DeliveryState.bounced, 550, "550 5.1.1 unknown", 1,
                       "hard bounce", utcnow(), BounceClass.hard, "5.1.1",
                       "reader00004@d0.example.net")
        ledger.commit_group([hard, _deferred(ids[5], nine + dt.timedelta(minutes=1)),
                             _deferred(ids[6], nine, code=None)], claim_after=None,
                            last_id=ids[-1], limit=4, now=utcnow())
        ledger.release([], to=DeliveryState.deferred, now=utcnow())
    finally:
        ledger.close()
    assert _deferrals(edition_id) == {("09:14", "d0.example.net"): 2,
                                      ("09:14", "d1.example.net"): 1,
                                      ("09:15", "d1.example.net"): 1}
    states = [s for _, s, _, _ in _rows(edition_id)]
    assert states == ["deferred"] * 3 + ["sent", "bounced", "deferred", "deferred", "queued"]


def test_a_deferral_is_a_4xx_answer_whatever_the_row_becomes(clean) -> None:
    """The last 4xx of a delivery whose attempts ran out is a deferral (the row is failed);
    a 5xx that is tried again (the row is deferred) is not."""
    make_subscribers(2, domains=1)
    edition_id = make_edition()
    start(edition_id)
    ids = [r[0] for r in _rows(edition_id)]
    nine = utcnow().replace(hour=9, minute=14, second=5)
    exhausted = Outcome(ids[0], DeliveryState.failed, 421, "421 4.7.0 try later", 5,
                        "retries exhausted", nine)
    soft = Outcome(ids[1], DeliveryState.deferred, 552, "552 5.2.2 mailbox full", 1,
                   "deferred", nine)
    ledger = Ledger(edition_id, HOLDER, SendingSettings(), BounceSettings())
    try:
        _, (claims, reached), _ = ledger.commit_group(
            [], claim_after=ids[0] - 1, last_id=ids[-1], limit=2, now=utcnow())
        assert len(claims) == 2
        ledger.commit_group([exhausted, soft], claim_after=reached, last_id=ids[-1], limit=2,
                            now=utcnow())
    finally:
        ledger.close()
    assert _deferrals(edition_id) == {("09:14", "example.net"): 1}
    assert [s for _, s, _, _ in _rows(edition_id)] == ["failed", "deferred"]
