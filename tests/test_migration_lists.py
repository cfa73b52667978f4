"""Migration 0016 (lists) on a database of today with data in it, on SQLite and PostgreSQL.

The single list of before becomes the first list: each test builds the 0015 schema with
alembic, fills it with plain SQL (readers in every status, consent events of every kind,
confirmation links used and open, a suppression, editions draft and sent, deliveries,
bounces, links, a reader deleted after a delivery), upgrades, and checks that every row is
still there and means what it meant; then downgrades and finds the single list of before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailer import db, migrate
from mailer.config import IdentitySettings
from mailer.subscribers.models import LIST_KINDS, ConsentEventKind
from tests.conftest import empty_database

BACKENDS = ["sqlite", "postgresql"]
NAME, LIST_ID = "Probation Matters", "matters.probation.example.net"
#: The columns 0016 takes from subscriber (to subscription, list 1).
MOVED = ("status", "confirmed_at", "unsubscribed_at")
#: The tables 0016 adds.
NEW = {"mailing_list", "subscription", "topic"}

UTC = dt.UTC


def at(day: int, hour: int = 9, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, 7, 123456, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as database_url:
        yield database_url


@pytest.fixture
def list_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The single list's settings, as the process that runs the upgrade has them."""
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    monkeypatch.setenv("MAILER_LIST_NAME", NAME)
    monkeypatch.setenv("MAILER_LIST_ID", LIST_ID)


# --- reading a database whatever its revision ------------------------------------------------
def tables(engine: Engine) -> dict[str, sa.Table]:
    meta = sa.MetaData()
    meta.reflect(engine)
    return {name: t for name, t in meta.tables.items() if name != "alembic_version"}


def norm(value: Any) -> Any:
    """A value as both backends give it back: timestamps naive UTC, bytes as bytes."""
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def rows(engine: Engine, table: sa.Table) -> list[dict[str, Any]]:
    order = list(table.primary_key.columns) or list(table.columns)
    with engine.connect() as conn:
        return [{k: norm(v) for k, v in r._mapping.items()}
                for r in conn.execute(sa.select(table).order_by(*order))]


def snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    return {name: rows(engine, t) for name, t in tables(engine).items()}


def by_id(snap: dict[str, list[dict[str, Any]]], table: str) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in snap[table]}


# --- today's database, with data in it --------------------------------------------------------
def address_hash(email: str) -> str:
    return hashlib.sha256(email.lower().encode()).hexdigest()


#: (first name, status, confirmed_at, unsubscribed_at)
READERS = [
    ("Alice", "confirmed", at(2, 10), None),
    ("Bob", "pending", None, None),
    ("Carol", "unsubscribed", at(2, 11), at(5, 12)),
    ("Dave", "confirmed", at(3, 8), None),
    ("Erin", "unsubscribed", None, at(4, 16)),  # imported, then left: never confirmed
    ("Gina", "pending", None, None),
    ("Hugo", "confirmed", at(3, 9), None),  # a hard bounce: suppressed, still confirmed
    ("Frank", "confirmed", at(1, 9), None),  # deleted after his delivery
]
#: Consent events (reader's first name or None, kind, detail) in the order they happened.
EVENTS = [
    ("Alice", "subscribed", None), ("Alice", "confirmation_sent", None),
    ("Alice", "confirmed", None), ("Alice", "welcome_sent", None),
    ("Alice", "already_subscribed", None),
    ("Alice", "name_changed", {"first_name": ["Alicia", "Alice"]}),
    ("Alice", "export_requested", {"round": "r1"}), ("Alice", "request_mailed", {"round": "r1"}),
    ("Alice", "export_confirmed", None), ("Alice", "data_exported", None),
    ("Bob", "subscribed", None), ("Bob", "confirmation_sent", None),
    ("Carol", "subscribed", None), ("Carol", "confirmed", None),
    ("Carol", "unsubscribed", {"one_click": True}), ("Carol", "resubscribed", None),
    ("Carol", "unsubscribed", None),
    ("Dave", "imported", None), ("Dave", "erasure_requested", {"round": "r2"}),
    ("Erin", "imported", None), ("Erin", "unsubscribed", None),
    ("Gina", "subscribed", None), ("Gina", "confirmation_sent", None),
    ("Hugo", "subscribed", None), ("Hugo", "confirmed", None), ("Hugo", "suppressed", None),
    ("Hugo", "unsuppressed", None), ("Hugo", "suppressed", {"reason": "hard_bounce"}),
    ("Frank", "imported", None), ("Frank", "confirmed", None),
    (None, "erased", None),  # the person is gone; the address hash stays
]


def insert_all(conn: sa.Connection, table: sa.Table, values: list[dict[str, Any]]) -> None:
    """Rows that leave different columns out (NULL) in one statement each."""
    for row in values:
        conn.execute(table.insert().values(row))


def test_the_data_has_an_event_of_every_kind_of_before() -> None:
    assert {k for _, k, _ in EVENTS} == set(ConsentEventKind) - {"topics_changed"}


def build_todays_database(url: str) -> dict[str, int]:
    """Upgrade to 0015 and fill it; the ids by first name (Frank's row is deleted)."""
    migrate.upgrade(url, "0015")
    engine = db.get_engine(url)
    t = tables(engine)
    assert "status" in t["subscriber"].c and "mailing_list" not in t
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        for n, (first, status, confirmed, unsubscribed) in enumerate(READERS, start=1):
            email = f"{first.lower()}@readers.example.org"
            conn.execute(t["subscriber"].insert().values(
                id=n, public_id=f"pub{n:029d}", email=email, email_key=email,
                address_hash=address_hash(email), first_name=first, last_name="Reader",
                organisation="Probation Service", country="Netherlands", status=status,
                source="form" if n % 2 else "import", created_at=at(1, 8, n),
                updated_at=unsubscribed or confirmed or at(1, 8, n), confirmed_at=confirmed,
                unsubscribed_at=unsubscribed))
            ids[first] = n
        for n, (who, kind, detail) in enumerate(EVENTS, start=1):
            email = f"{(who or 'erased').lower()}@readers.example.org"
            conn.execute(t["consent_event"].insert().values(
                id=n, subscriber_id=ids[who] if who else None,
                address_hash=address_hash(email), kind=kind, at=at(1 + n % 6, 10, n),
                consent_version="2026-01" if kind in ("subscribed", "imported") else None,
                consent_text="Yes, send me the newsletter." if kind == "subscribed" else None,
                source="form", channel="web", ip="192.0.2.7", user_agent="Firefox",
                message_id=f"<m{n}@example.org>" if kind.endswith("_sent") else None,
                detail=detail, edition_id=2 if kind == "unsubscribed" else None))
        insert_all(conn, t["confirmation_token"], [
            dict(id=1, subscriber_id=ids["Alice"], nonce="n1", created_at=at(1), expires_at=at(8),
                 used_at=at(2, 10), sent_at=at(1, 9, 1), message_id="<c1@example.org>"),
            dict(id=2, subscriber_id=ids["Bob"], nonce="n2", created_at=at(3), expires_at=at(10),
                 sent_at=at(3, 9, 1), message_id="<c2@example.org>"),
            dict(id=3, subscriber_id=ids["Gina"], nonce="n3", created_at=at(4), expires_at=at(11),
                 claimed_until=at(4, 9, 5), last_error="421 try later"),
            dict(id=4, subscriber_id=ids["Frank"], nonce="n4", created_at=at(1),
                 expires_at=at(8), used_at=at(1, 9)),
        ])
        insert_all(conn, t["suppression"], [
            dict(id=1, address_hash=address_hash("hugo@readers.example.org"),
                 reason="hard_bounce", evidence="550 5.1.1 no such user", created_at=at(6),
                 created_by="bounce"),
            dict(id=2, address_hash=address_hash("erased@readers.example.org"),
                 reason="erased", evidence="", created_at=at(5), created_by="staff@example.org"),
        ])
        conn.execute(t["article"].insert().values(
            id=1, guid="g1", link="https://www.cep-probation.org/a1", title="A1",
            published_at=at(1), published_utc_offset=60, categories=["Mental Health"],
            author="Ed", summary_html="<p>s</p>", summary_text="s", image_url=None,
            image_alt="", source="https://www.cep-probation.org/feed", content_hash="h" * 64,
            created_at=at(1), updated_at=at(1)))
        edition: dict[str, Any] = dict(
            preheader="", intro="Hello", window_start=at(1), window_end=at(6),
            category_order=["Mental Health"], state_reason="", created_by="staff@example.org",
            audience_count=0)
        insert_all(conn, t["edition"], [
            dict(edition, id=1, slug="2026-04", subject="April", state="draft",
                 created_at=at(6), updated_at=at(6), html_snapshot=None, text_snapshot=None,
                 subject_snapshot=None, archive_html=None, stats=None, placeholder_key=None,
                 scheduled_at=None, started_at=None, finished_at=None),
            dict(edition, id=2, slug="2026-03", subject="March", state="sent",
                 created_at=at(2), updated_at=at(3), started_at=at(3), finished_at=at(3, 10),
                 html_snapshot="<p>March</p>", text_snapshot="March", subject_snapshot="March",
                 archive_html="<p>March</p>", audience_count=5, stats={"sent": 3},
                 placeholder_key="k" * 32, scheduled_at=at(3)),
            dict(edition, id=3, slug="2026-02", subject="February", state="sent",
                 created_at=at(1), updated_at=at(1), started_at=at(1), finished_at=at(1, 10),
                 html_snapshot="<p>Feb</p>", text_snapshot="Feb", subject_snapshot="Feb",
                 archive_html=None, audience_count=2, stats={"sent": 2}, placeholder_key=None,
                 scheduled_at=None),
        ])
        conn.execute(t["edition_article"].insert().values(
            id=1, edition_id=2, article_id=1, position=0))
        insert_all(conn, t["edition_link"], [
            dict(edition_id=2, position=0, url="https://www.cep-probation.org/a1", label="A1",
                 clicks=4, head_requests=1, scanner_clicks=1),
            dict(edition_id=2, position=1, url="https://www.cep-probation.org/", label="CEP",
                 clicks=0, head_requests=0, scanner_clicks=0),
        ])
        delivery: dict[str, Any] = dict(attempts=1, next_attempt_at=None, lease_until=None,
                                        smtp_code=250, smtp_reply="250 OK", outcome="sent",
                                        holder_id=None)
        insert_all(conn, t["delivery"], [
            dict(delivery, id=1, edition_id=2, subscriber_id=ids["Alice"], state="sent",
                 updated_at=at(3, 9, 1), sent_at=at(3, 9, 1)),
            dict(delivery, id=2, edition_id=2, subscriber_id=ids["Carol"], state="sent",
                 updated_at=at(3, 9, 2), sent_at=at(3, 9, 2)),
            dict(delivery, id=3, edition_id=2, subscriber_id=ids["Hugo"], state="bounced",
                 updated_at=at(3, 9, 3), sent_at=None, smtp_code=550,
                 smtp_reply="550 5.1.1 no such user", outcome="hard_bounce"),
            dict(delivery, id=4, edition_id=2, subscriber_id=ids["Dave"], state="deferred",
                 attempts=2, updated_at=at(3, 9, 4), sent_at=None, smtp_code=421,
                 smtp_reply="421 later", outcome="deferred", next_attempt_at=at(3, 11)),
            dict(delivery, id=5, edition_id=2, subscriber_id=ids["Frank"], state="sent",
                 updated_at=at(3, 9, 5), sent_at=at(3, 9, 5)),
            dict(delivery, id=6, edition_id=3, subscriber_id=ids["Alice"], state="sent",
                 updated_at=at(1, 9, 1), sent_at=at(1, 9, 1)),
            dict(delivery, id=7, edition_id=3, subscriber_id=ids["Dave"], state="skipped",
                 attempts=0, updated_at=at(1, 9, 2), sent_at=None, smtp_code=None,
                 smtp_reply=None, outcome="unsubscribed"),
        ])
        bounce: dict[str, Any] = dict(
            source="smtp", status_code="5.1.1", diagnostic="no such user", remote_mta="mx",
            attribution="verp", attribution_note="", raw_excerpt="", trust="verified",
            unverified_reason="", evidence="")
        insert_all(conn, t["bounce"], [
            dict(bounce, id=1, received_at=at(3, 9, 3), bounce_class="hard",
                 recipient="hugo@readers.example.org", delivery_id=3, edition_id=2,
                 subscriber_id=ids["Hugo"], action="suppressed", fingerprint="f1"),
            dict(bounce, id=2, received_at=at(3, 12), bounce_class="soft",
                 recipient="dave@readers.example.org", delivery_id=4, edition_id=2,
                 subscriber_id=ids["Dave"], action="none", fingerprint="f2"),
            dict(bounce, id=3, received_at=at(4), bounce_class="hard",
                 recipient="stranger@elsewhere.example", delivery_id=None, edition_id=None,
                 subscriber_id=None, attribution="none", action="none", fingerprint="f3",
                 trust="unverified", unverified_reason="no_verp"),
        ])
        # Frank asked to be deleted after his delivery: the trigger blanks it, his consent
        # events lose their subscriber (the address hash stays), his token goes.
        conn.execute(t["subscriber"].delete().where(t["subscriber"].c.id == ids["Frank"]))
        if engine.dialect.name == "postgresql":  # as if the app had inserted them
            for name, table in t.items():
                if "id" in table.c and list(table.primary_key.columns) == [table.c.id] \
                        and isinstance(table.c.id.type, sa.Integer):
                    conn.execute(sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"coalesce((SELECT max(id) FROM {name}), 0) + 1, false)"))
    with engine.connect() as conn:
        assert conn.scalar(sa.select(t["delivery"].c.subscriber_id)
                           .where(t["delivery"].c.id == 5)) is None
    del ids["Frank"]
    return ids


# --- the checks --------------------------------------------------------------------------------
def assert_nothing_else_changed(before: dict[str, list[dict[str, Any]]],
                                after: dict[str, list[dict[str, Any]]]) -> None:
    """Every table of before has the same rows, and each row the same values in the columns
    it had (subscriber without those that moved). Later migrations may add tables."""
    assert set(after) >= set(before) | NEW
    for name, old in before.items():
        drop = MOVED if name == "subscriber" else ()
        kept = [{k: v for k, v in r.items() if k not in drop} for r in old]
        new = [{k: r[k] for k in kept[0]} for r in after[name]] if kept else after[name]
        assert len(after[name]) == len(old), name
        assert new == kept, name


def assert_one_list(url: str, before: dict[str, list[dict[str, Any]]], *, name: str,
                    list_id: str) -> None:
    engine = db.get_engine(url)
    after = snapshot(engine)
    assert_nothing_else_changed(before, after)

    [first] = after["mailing_list"]
    assert (first["id"], first["slug"], first["name"], first["list_id"]) == (
        1, "newsletter", name, list_id)
    # Empty: the settings' values, so nothing a reader gets changes.
    assert (first["from_address"], first["reply_to"], first["consent_text"],
            first["consent_version"], first["click_tracking"]) == (None,) * 5
    assert (bool(first["public"]), bool(first["archive"]), first["archived_at"]) == (
        True, True, None)
    assert after["topic"] == []

    # One subscription per person, to list 1, with the status and times they had.
    readers = by_id(before, "subscriber")
    subscriptions = after["subscription"]
    assert sorted(s["subscriber_id"] for s in subscriptions) == sorted(readers)
    for s in subscriptions:
        reader = readers[s["subscriber_id"]]
        assert s["list_id"] == 1
        assert s["topics"] is None  # everything, and topics to come
        assert {k: s[k] for k in (*MOVED, "created_at", "updated_at")} == {
            k: reader[k] for k in (*MOVED, "created_at", "updated_at")}
    assert {s["status"] for s in subscriptions} == {"pending", "confirmed", "unsubscribed"}

    assert {e["list_id"] for e in after["edition"]} == {1}
    events = after["consent_event"]
    assert {e["kind"] for e in events} == {k for _, k, _ in EVENTS}
    for event in events:
        assert event["list_id"] == (1 if event["kind"] in LIST_KINDS else None), event["kind"]
    assert [tok["lists"] for tok in after["confirmation_token"]] == [[1]] * len(
        before["confirmation_token"])

    columns = {c["name"] for c in sa.inspect(engine).get_columns("subscriber")}
    assert not columns & set(MOVED)


def assert_links_hold(url: str, ids: dict[str, int]) -> None:
    """What keeps the rows together works on the migrated database: the delivery triggers,
    the subscription's cascade, and the new ids come after list 1."""
    engine = db.get_engine(url)
    t = tables(engine)
    delivery, subscription = t["delivery"], t["subscription"]
    with engine.begin() as conn:
        conn.execute(t["edition"].delete().where(t["edition"].c.id == 3))
        assert conn.scalars(sa.select(delivery.c.id).order_by(delivery.c.id)).all() == [
            1, 2, 3, 4, 5]
        conn.execute(t["subscriber"].delete().where(t["subscriber"].c.id == ids["Alice"]))
        assert conn.scalar(sa.select(delivery.c.subscriber_id)
                           .where(delivery.c.id == 1)) is None
        assert conn.scalar(sa.select(sa.func.count()).select_from(subscription)
                           .where(subscription.c.subscriber_id == ids["Alice"])) == 0
        assert conn.scalar(sa.select(sa.func.count()).select_from(t["consent_event"])
                           .where(t["consent_event"].c.subscriber_id == ids["Alice"])) == 0
        # A second list gets the next id (PostgreSQL's sequence went past the given 1).
        new = conn.execute(t["mailing_list"].insert().values(
            slug="events", name="Events", description="", list_id="events.example.org",
            public=False, archive=False, no_topics="skip", position=1,
            created_at=at(7)).returning(t["mailing_list"].c.id)).scalar_one()
        assert new == 2
        conn.execute(subscription.insert().values(
            subscriber_id=ids["Bob"], list_id=new, status="pending", created_at=at(7),
            updated_at=at(7)))
        conn.execute(t["edition"].insert().values(  # an edition that names no list: list 1
            slug="x", subject="x", preheader="", intro="", window_start=at(7),
            window_end=at(8), category_order=[], state="draft", state_reason="",
            created_at=at(7), updated_at=at(7), created_by="t", audience_count=0))
        assert conn.scalar(sa.select(t["edition"].c.list_id)
                           .where(t["edition"].c.slug == "x")) == 1
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(subscription.insert().values(
            subscriber_id=ids["Bob"], list_id=1, status="confirmed", created_at=at(7),
            updated_at=at(7)))


# --- the tests ---------------------------------------------------------------------------------
@pytest.mark.usefixtures("list_env")
def test_upgrade_keeps_every_row_and_its_meaning_and_the_downgrade_gives_it_back(
        url: str) -> None:
    ids = build_todays_database(url)
    engine = db.get_engine(url)
    before = snapshot(engine)
    assert len(before["subscriber"]) == 7 and len(before["delivery"]) == 7

    assert migrate.upgrade(url, "0016") == ["0016"]
    assert_one_list(url, before, name=NAME, list_id=LIST_ID)

    # A person only on a second list, and one list-1 reader who also left a second list.
    t = tables(engine)
    with engine.begin() as conn:
        conn.execute(t["mailing_list"].insert().values(
            id=2, slug="events", name="Events", description="", list_id="events.example.org",
            public=True, archive=False, no_topics="skip", position=1, created_at=at(7)))
        conn.execute(t["subscriber"].insert().values(
            id=20, public_id="p20", email="new@readers.example.org",
            email_key="new@readers.example.org", address_hash=address_hash("new"),
            first_name="", last_name="", organisation="", country="", source="form",
            created_at=at(7), updated_at=at(7)))
        insert_all(conn, t["subscription"], [
            dict(subscriber_id=20, list_id=2, status="confirmed", created_at=at(7),
                 updated_at=at(7), confirmed_at=at(7)),
            dict(subscriber_id=ids["Alice"], list_id=2, status="unsubscribed",
                 created_at=at(7), updated_at=at(7), unsubscribed_at=at(7, 10)),
        ])

    migrate.downgrade(url, "0015")
    back = snapshot(engine)
    assert set(back) == set(before)
    newcomer = by_id(back, "subscriber").pop(20)
    # Not on the list of before: kept, and never mailed by it.
    assert newcomer["status"] == "unsubscribed" and newcomer["confirmed_at"] is None
    back["subscriber"] = [r for r in back["subscriber"] if r["id"] != 20]
    assert [(r["first_name"], r["status"]) for r in back["subscriber"]] == [
        (first, status) for first, status, _, _ in READERS[:-1]]
    for name in before:
        assert back[name] == before[name], name
    inspector = sa.inspect(engine)
    assert "ix_subscriber_status_id" in {i["name"] for i in inspector.get_indexes("subscriber")}
    assert "lists" not in {c["name"] for c in inspector.get_columns("confirmation_token")}
    status = {c["name"]: c for c in inspector.get_columns("subscriber")}["status"]
    assert status["nullable"] is False
    if engine.dialect.name == "postgresql":  # SQLite keeps the default: no table rebuild
        assert status["default"] is None

    # Up again, to whatever head is now (later migrations included), and the links hold.
    migrate.upgrade(url, "head")
    again = snapshot(engine)
    assert {s["subscriber_id"] for s in again["subscription"]} == set(ids.values()) | {20}
    assert {e["list_id"] for e in again["edition"]} == {1}
    assert_links_hold(url, ids)


@pytest.mark.usefixtures("list_env")
def test_upgrade_to_head_in_one_go(url: str) -> None:
    ids = build_todays_database(url)
    before = snapshot(db.get_engine(url))
    applied = migrate.upgrade(url, "head")
    assert applied[0] == "0016"
    assert_one_list(url, before, name=NAME, list_id=LIST_ID)
    assert_links_hold(url, ids)


def test_without_settings_the_first_list_has_the_settings_defaults(
        url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILER_LIST_NAME", raising=False)
    monkeypatch.delenv("MAILER_LIST_ID", raising=False)
    migrate.upgrade(url, "0016")
    with db.get_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT name, list_id FROM mailing_list")).one() == (
            IdentitySettings.model_fields["list_name"].default,
            IdentitySettings.model_fields["list_id"].default)


def test_the_first_list_takes_its_name_from_dot_env_as_the_settings_do(
        url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """`mailer` reads MAILER_* from .env too (deploy: `cp deploy/env.example .env`): the
    upgrade must name the list, and keep its List-Id, from there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILER_LIST_NAME", raising=False)
    monkeypatch.delenv("MAILER_LIST_ID", raising=False)
    (tmp_path / ".env").write_text(f"MAILER_LIST_NAME='{NAME}'\nmailer_list_id={LIST_ID}\n")
    migrate.upgrade(url, "0016")
    with db.get_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT name, list_id FROM mailing_list")).one() == (
            NAME, LIST_ID)
