"""The audience freeze and the delivery rows' links, now that PostgreSQL checks no foreign
key per inserted row (a million checks were most of a million-reader freeze): one row per
reader and edition however the freeze is run, an erasure never leaves a delivery naming a
subscriber who is gone, and an edition deleted takes its deliveries with it."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from mailer import privacy
from mailer.config import get_settings
from mailer.db import transaction, utcnow
from mailer.deliveries.models import Delivery
from mailer.delivery import service as sending
from mailer.editions.models import Edition
from mailer.subscribers.models import Subscriber
from tests.support.factories import make_edition, make_subscribers, start


def _deliveries(edition_id: int) -> list[tuple[int | None, str]]:
    with transaction() as session:
        return [(s, st) for s, st in session.execute(
            select(Delivery.subscriber_id, Delivery.state)
            .where(Delivery.edition_id == edition_id).order_by(Delivery.id))]


def _subscriber_id(email: str) -> int:
    with transaction() as session:
        found = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
        assert found is not None
        return int(found)


def test_a_reader_has_one_delivery_per_edition_however_the_freeze_runs(clean) -> None:
    readers = make_subscribers(6)
    edition_id = make_edition()
    assert start(edition_id) == 6
    ids = [_subscriber_id(r) for r in readers]
    assert sorted(s for s, _ in _deliveries(edition_id)) == sorted(ids)
    # The database itself refuses a second row for a reader (the first freeze inserts
    # without ON CONFLICT: the unique index is what guarantees it).
    with pytest.raises(IntegrityError), transaction() as session:
        session.add(Delivery(edition_id=edition_id, subscriber_id=ids[0], state="queued",
                             attempts=0, updated_at=utcnow()))
        session.flush()
    # A freeze of an edition that already has some rows adds only the readers it lacks.
    with transaction() as session:
        session.execute(delete(Delivery).where(Delivery.edition_id == edition_id,
                                               Delivery.subscriber_id.in_(ids[:2])))
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        assert sending._freeze_audience(session, edition, get_settings()) == 6
    assert sorted(s for s, _ in _deliveries(edition_id)) == sorted(ids)


def test_erasing_a_reader_leaves_their_deliveries_naming_nobody(clean) -> None:
    readers = make_subscribers(3)
    edition_id = make_edition()
    start(edition_id)
    gone = _subscriber_id(readers[1])
    with transaction() as session:
        subscriber = session.get(Subscriber, gone)
        assert subscriber is not None
        privacy.erase(session, subscriber, by="test")
    rows = _deliveries(edition_id)
    assert len(rows) == 3
    assert gone not in [s for s, _ in rows]
    assert [s for s, _ in rows].count(None) == 1


def test_deleting_an_edition_deletes_its_deliveries(clean) -> None:
    make_subscribers(3)
    kept, dropped = make_edition(), make_edition(subject="another")
    start(kept)
    start(dropped)
    with transaction() as session:
        session.execute(delete(Edition).where(Edition.id == dropped))
    with transaction() as session:
        left = session.execute(select(Delivery.edition_id, func.count())
                               .group_by(Delivery.edition_id)).all()
    assert [tuple(r) for r in left] == [(kept, 3)]


def test_an_erasure_waits_for_a_freeze_in_progress(clean) -> None:
    """Without a foreign key checked per row, nothing but the audience lock keeps a reader
    from being erased between the freeze reading their id and committing the row that
    names it; the erasure must wait for the freeze, then blank the link."""
    if clean.backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: a freeze and an erasure cannot overlap")
    readers = make_subscribers(3)
    edition_id = make_edition()
    gone = _subscriber_id(readers[0])
    frozen, erased = threading.Event(), threading.Event()

    def erase() -> None:
        frozen.wait(30)
        with transaction() as session:
            subscriber = session.get(Subscriber, gone)
            assert subscriber is not None
            privacy.erase(session, subscriber, by="test")
        erased.set()

    eraser = threading.Thread(target=erase)
    eraser.start()
    try:
        with transaction() as session:
            edition = session.get(Edition, edition_id)
            assert edition is not None
            assert sending._freeze_audience(session, edition, get_settings()) == 3
            frozen.set()
            # The erasure is under way in the other thread; it must not get past the lock
            # while this freeze is uncommitted (it would commit, and its trigger would not
            # see this transaction's rows).
            assert not erased.wait(2.0), "an erasure went through during a freeze"
    finally:
        frozen.set()
        eraser.join(30)
    assert erased.is_set()
    rows = _deliveries(edition_id)
    assert len(rows) == 3
    assert gone not in [s for s, _ in rows]
    assert [s for s, _ in rows].count(None) == 1
