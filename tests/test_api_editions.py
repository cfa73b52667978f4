"""``/api/v1/editions`` over real HTTP (both databases): the scopes, a draft previewed,
test-copied and sent through a real worker to the SMTP catcher, watched to the end; the
send's checks (preflight) refusing with a 409 that lists them; pause, resume, cancel and
the schedule, each safe to repeat; 404s, and 422s naming the wrong field."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, update

from mailer.audit import AuditEntry
from mailer.bounces.actions import record_bounce
from mailer.bounces.models import BounceClass
from mailer.db import transaction, utcnow
from mailer.deliveries.models import Delivery
from mailer.delivery import service as sending
from tests.conftest import wait_for, wait_settled
from tests.support.factories import (
    BOUNCES,
    edition_state,
    make_articles,
    make_edition,
    make_subscribers,
    start,
    wait_sent,
)
from tests.support.mail import parse, parts
from tests.support.processes import WebServer, free_port
from tests.test_api import api, fields, is_problem, token


def audit(edition_id: int) -> list[tuple[str, str]]:
    with transaction() as session:
        return [(e.action, e.actor) for e in session.scalars(
            select(AuditEntry).where(AuditEntry.target == f"edition:{edition_id}")
            .order_by(AuditEntry.id))]


def deliveries(edition_id: int) -> int:
    with transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Delivery)
                                  .where(Delivery.edition_id == edition_id)) or 0)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


@pytest.fixture
def sending_web(rig) -> Iterator[WebServer]:  # type: ignore[no-untyped-def]
    """The web app on the sending rig's Redis: what it queues, the rig's workers take."""
    server = WebServer({**rig.stack.env, **rig.env}, rig.stack.tmp / "web-rig.log",
                       free_port()).start()
    yield server
    server.stop()


def test_reads_need_editions_read_and_every_change_editions_send(clean, web) -> None:
    edition_id = make_edition()
    reader = api(web, token("dashboard", "editions:read"))
    other = api(web, token("crm", "subscribers:read", "subscribers:write"))

    assert "editions:read" in is_problem(other.get("/editions"), 403)["detail"]
    is_problem(other.get(f"/editions/{edition_id}/preview"), 403)
    for method, path, body in (
            ("POST", "/editions", {}),
            ("PATCH", f"/editions/{edition_id}", {"subject": "Changed"}),
            ("POST", f"/editions/{edition_id}/test", {"to": ["staff@example.org"]}),
            ("POST", f"/editions/{edition_id}/schedule",
             {"at": iso(utcnow() + dt.timedelta(days=1))}),
            ("DELETE", f"/editions/{edition_id}/schedule", None),
            ("POST", f"/editions/{edition_id}/send", None),
            ("POST", f"/editions/{edition_id}/pause", None),
            ("POST", f"/editions/{edition_id}/resume", None),
            ("POST", f"/editions/{edition_id}/cancel", None)):
        refused = reader.request(method, path, json=body)
        assert "editions:send" in is_problem(refused, 403)["detail"], (method, path)
    assert edition_state(edition_id) == "draft" and deliveries(edition_id) == 0
    assert audit(edition_id) == [] and clean.smtp.messages == []

    assert reader.get(f"/editions/{edition_id}").json()["subject"] == \
        "CEP Newsletter – test edition"
    assert reader.get(f"/editions/{edition_id}/progress").json()["audience"] == 0


def test_editions_are_listed_newest_first_a_page_at_a_time(clean, web) -> None:
    ids = [make_edition(subject=f"Edition {i}") for i in range(5)]
    client = api(web, token("dashboard", "editions:read"))
    seen, after, pages = [], None, 0
    while True:
        answer = client.get("/editions", params={"limit": 2, **({"after": after}
                                                                 if after else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += [e["id"] for e in body["items"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert seen == ids[::-1] and pages == 3
    every = client.get("/editions").json()["items"]
    assert every[0]["subject"] == "Edition 4" and every[0]["state"] == "draft"
    # each make_edition adds three articles, and each window holds all so far
    assert [e["articles"] for e in every] == [15, 12, 9, 6, 3]
    assert every[0]["audience"] is None and every[0]["created_by"] == "test"
    assert client.get("/editions", params={"state": "sent"}).json() == {"items": [],
                                                                        "next": None}
    assert len(client.get("/editions", params={"state": "draft"}).json()["items"]) == 5
    assert client.get("/editions", params={"after": "9" * 18}).json()["items"] != []
    assert client.get("/editions", params={"after": "1"}).json()["items"] == []

    assert fields(client.get("/editions", params={"limit": 0})) == {"limit"}
    assert fields(client.get("/editions", params={"after": "-1"})) == {"after"}
    assert fields(client.get("/editions", params={"state": "gone"})) == {"state"}
    assert fields(client.get("/editions", params={"sate": "draft"})) == {"sate"}


def test_unknown_editions_are_404_and_wrong_input_a_422_naming_the_field(clean, web) -> None:
    edition_id = make_edition()
    client = api(web, token("newsroom", "editions:read", "editions:send"))
    soon = iso(utcnow() + dt.timedelta(days=1))
    for method, path, body in (
            ("GET", "/editions/999", None), ("GET", "/editions/999/preview", None),
            ("GET", "/editions/999/progress", None),
            ("PATCH", "/editions/999", {"subject": "x"}),
            ("POST", "/editions/999/test", {"to": ["staff@example.org"]}),
            ("POST", "/editions/999/schedule", {"at": soon}),
            ("DELETE", "/editions/999/schedule", None), ("POST", "/editions/999/send", None),
            ("POST", "/editions/999/pause", None), ("POST", "/editions/999/resume", None),
            ("POST", "/editions/999/cancel", None)):
        answer = client.request(method, path, json=body)
        assert "no edition" in is_problem(answer, 404)["detail"], (method, path)
    assert fields(client.get("/editions/0")) == {"edition_id"}
    assert fields(client.get("/editions/abc")) == {"edition_id"}
    assert fields(client.get(f"/editions/{2**31}")) == {"edition_id"}

    wrong = {
        ("POST", "/editions"): [
            ({"window_start": "2026-01-01T00:00:00"}, "window_start"),  # no time zone
            ({"window_start": "0001-01-01T00:00:00Z"}, "window_start"),
            ({"window_end": "9999-12-31T23:00:00-05:00"}, "window_end"),  # year 10000 in UTC
            ({"window_start": "2026-02-01T00:00:00Z", "window_end": "2026-01-01T00:00:00Z"},
             "window_end"),
            ({"subject": ""}, "subject"), ({"subject": "a\nBcc: b"}, "subject"),
            ({"subject": "   "}, "subject"),
            ({"title": "x"}, "title")],
        ("PATCH", f"/editions/{edition_id}"): [
            ({"subject": "x" * 301}, "subject"), ({"intro": "a\u0000b"}, "intro"),
            ({"category_order": [""]}, "category_order.0"),
            ({"category_order": ["News", "  "]}, "category_order.1"),
            ({"category_order": ["News", " News"]}, "category_order"),
            ({"window_end": "2001-01-01T00:00:00Z"}, "window_end"),  # before its start
            ({"state": "sent"}, "state")],
        ("POST", f"/editions/{edition_id}/test"): [
            ({"to": []}, "to"), ({"to": [f"s{i}@example.org" for i in range(11)]}, "to"),
            ({"to": ["not an address"]}, "to.0"), ({}, "to")],
        ("POST", f"/editions/{edition_id}/schedule"): [
            ({"at": "tomorrow"}, "at"), ({}, "at"),
            ({"at": iso(utcnow() - dt.timedelta(minutes=1))}, "at")],
        ("POST", f"/editions/{edition_id}/pause"): [({"reason": "a\r\nb"}, "reason")],
    }
    for (method, path), cases in wrong.items():
        for body, field in cases:
            assert fields(client.request(method, path, json=body)) == {field}, (path, body)
    assert fields(client.post("/editions", json=["a list"])) == {"body"}
    assert "parsing the body" in is_problem(client.post(
        "/editions", content=b"\xff not json", headers={"Content-Type": "application/json"}),
        400)["detail"]

    # A window without any article drafts nothing, and says where the newest one is.
    empty = client.post("/editions", json={"window_start": "2001-01-01T00:00:00Z",
                                           "window_end": "2001-02-01T00:00:00Z"})
    assert fields(empty) == {"window_start"}
    assert "The newest article is from" in empty.json()["detail"]
    assert len(client.get("/editions").json()["items"]) == 1
    assert audit(edition_id) == [] and edition_state(edition_id) == "draft"


def test_a_draft_is_previewed_test_copied_sent_and_watched_through_the_api(
        rig, sending_web) -> None:
    readers = make_subscribers(6)
    make_articles(3)
    client = api(sending_web, token("newsroom", "editions:read", "editions:send"))
    since = iso(utcnow() - dt.timedelta(days=10))

    drafted = client.post("/editions", json={"window_start": since})
    assert drafted.status_code == 201, drafted.text
    edition = drafted.json()
    edition_id = edition["id"]
    assert edition["state"] == "draft" and edition["articles"] == 3
    assert [a["title"] for a in edition["article_list"]] == [
        f"Article number {i} about probation in Europe" for i in range(3)]
    assert edition["created_by"] == "api:newsroom" and edition["audience"] is None

    changed = client.patch(f"/editions/{edition_id}", json={
        "subject": "  Probation   news, March ", "intro": "Dear readers,\n\nspring is here."})
    assert changed.status_code == 200, changed.text
    assert changed.json()["subject"] == "Probation news, March"
    assert changed.json()["intro"] == "Dear readers,\n\nspring is here."
    assert client.get(f"/editions/{edition_id}").json() == changed.json()

    preview = client.get(f"/editions/{edition_id}/preview").json()
    assert preview["subject"] == "Probation news, March"
    assert "spring is here." in preview["html"] and "spring is here." in preview["text"]
    assert "Article number 2 about probation" in preview["text"]
    assert preview["html_bytes"] == len(preview["html"].encode())

    copies = client.post(f"/editions/{edition_id}/test",
                         json={"to": ["Editor@Example.org", "nobody@example.invalid"]})
    assert copies.status_code == 200, copies.text
    [good, bad] = copies.json()["items"]
    assert good["address"] == "Editor@Example.org" and good["sent"], good
    assert not bad["sent"] and bad["result"].startswith("not sent")
    [copy] = rig.stack.smtp.to("Editor@example.org")
    assert parse(copy)["Subject"] == "[TEST] Probation news, March"
    assert "spring is here." in parts(parse(copy))[0]
    assert deliveries(edition_id) == 0  # a test copy is no delivery

    rig.worker()
    sent = client.post(f"/editions/{edition_id}/send")
    assert sent.status_code == 202, sent.text
    assert sent.json() == {"edition_id": edition_id, "state": "sending", "audience": 6,
                           "started": True}
    again = client.post(f"/editions/{edition_id}/send")  # a repeat queues nothing new
    assert again.status_code == 202 and again.json()["audience"] == 6
    assert again.json()["started"] is False
    wait_sent(edition_id)
    assert client.post(f"/editions/{edition_id}/send").json() == {
        "edition_id": edition_id, "state": "sent", "audience": 6, "started": False}

    received = wait_settled(lambda: len(rig.stack.smtp.messages))
    assert received == 1 + 6  # the test copy, and one message per reader
    assert sorted(r for m in rig.stack.smtp.messages for r in m.rcpt_tos
                  if r in readers) == sorted(readers)
    progress = client.get(f"/editions/{edition_id}/progress").json()
    assert progress["state"] == "sent" and progress["audience"] == 6
    assert progress["counts"]["sent"] == 6 and progress["done"] == 6
    assert progress["remaining"] == 0 and progress["percent"] == 100.0
    done = client.get(f"/editions/{edition_id}").json()
    assert done["audience"] == 6 and done["archive_url"].endswith(f"/archive/{done['slug']}")
    assert "is sent" in is_problem(client.patch(f"/editions/{edition_id}",
                                                json={"subject": "Too late"}), 409)["detail"]
    assert audit(edition_id) == [(action, "api:newsroom") for action in (
        "edition.draft", "edition.edit", "edition.test", "edition.send")]


def test_a_send_the_checks_refuse_is_a_409_listing_them_and_queues_nothing(
        clean, web) -> None:
    edition_id = make_edition()
    client = api(web, token("newsroom", "editions:read", "editions:send"))

    nobody = client.post(f"/editions/{edition_id}/send")
    body = is_problem(nobody, 409)
    assert [c["check"] for c in body["checks"]] == ["audience"]
    assert "nobody would receive it" in body["checks"][0]["message"] in body["detail"]

    # Its window moved to a time without articles: the content check fails too.
    emptied = client.patch(f"/editions/{edition_id}", json={
        "window_start": "2001-01-01T00:00:00Z", "window_end": "2001-02-01T00:00:00Z"})
    assert emptied.status_code == 200 and emptied.json()["articles"] == 0
    make_subscribers(2)
    refused = is_problem(client.post(f"/editions/{edition_id}/send"), 409)
    assert [c["check"] for c in refused["checks"]] == ["content"]
    assert "no articles" in refused["checks"][0]["message"].lower()
    is_problem(client.post(f"/editions/{edition_id}/schedule",
                           json={"at": iso(utcnow() + dt.timedelta(days=1))}), 409)
    is_problem(client.post(f"/editions/{edition_id}/test",
                           json={"to": ["staff@example.org"]}), 409)
    assert edition_state(edition_id) == "draft" and deliveries(edition_id) == 0
    assert clean.smtp.messages == []
    assert [a for a, _ in audit(edition_id)] == ["edition.window"]


def test_pause_resume_cancel_and_the_schedule_are_safe_to_repeat(rig, sending_web) -> None:
    make_subscribers(3)
    edition_id = make_edition()
    client = api(sending_web, token("newsroom", "editions:read", "editions:send"))
    url = f"/editions/{edition_id}"

    assert "only a sending edition pauses" in is_problem(client.post(f"{url}/pause"),
                                                         409)["detail"]
    is_problem(client.post(f"{url}/resume"), 409)
    assert client.post(f"{url}/send").json()["audience"] == 3  # no worker takes it yet
    paused = client.post(f"{url}/pause", json={"reason": "a link is wrong"})
    assert paused.json() == {"edition_id": edition_id, "state": "paused", "changed": True}
    assert client.post(f"{url}/pause").json()["changed"] is False
    assert client.get(url).json()["state_reason"] == "a link is wrong"
    assert [c["check"] for c in is_problem(client.post(f"{url}/send"), 409)["checks"]] == [
        "state"]
    rig.worker()
    assert wait_settled(lambda: len(rig.stack.smtp.messages)) == 0  # nothing while paused
    resumed = client.post(f"{url}/resume")
    assert resumed.json() == {"edition_id": edition_id, "state": "sending", "changed": True}
    wait_sent(edition_id)
    assert len(rig.stack.smtp.messages) == 3
    assert "only a paused edition resumes" in is_problem(client.post(f"{url}/resume"),
                                                         409)["detail"]
    assert "cannot be cancelled" in is_problem(client.post(f"{url}/cancel"), 409)["detail"]
    assert [a for a, actor in audit(edition_id) if actor == "api:newsroom"] == [
        "edition.send", "edition.pause", "edition.resume"]

    second = make_edition(subject="Second")
    url = f"/editions/{second}"
    at = utcnow() + dt.timedelta(days=2)
    scheduled = client.post(f"{url}/schedule", json={"at": iso(at)})
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["state"] == "scheduled"
    later = client.post(f"{url}/schedule", json={"at": iso(at + dt.timedelta(hours=1))})
    assert dt.datetime.fromisoformat(later.json()["scheduled_at"]) == at + dt.timedelta(hours=1)
    assert client.delete(f"{url}/schedule").json() == {"edition_id": second,
                                                       "state": "draft", "changed": True}
    assert client.delete(f"{url}/schedule").json()["changed"] is False
    cancelled = client.post(f"{url}/cancel")
    assert cancelled.json() == {"edition_id": second, "state": "cancelled", "changed": True,
                                "cancelled": 0}
    assert client.post(f"{url}/cancel").json()["changed"] is False
    assert [c["check"] for c in is_problem(client.post(f"{url}/send"), 409)["checks"]] == [
        "state"]
    is_problem(client.patch(url, json={"subject": "x"}), 409)
    is_problem(client.delete(f"{url}/schedule"), 409)
    is_problem(client.post(f"{url}/schedule", json={"at": iso(at)}), 409)
    assert deliveries(second) == 0
    assert [a for a, _ in audit(second)] == ["edition.schedule", "edition.schedule",
                                             "edition.unschedule", "edition.cancel"]
    wait_for(lambda: edition_state(second) == "cancelled")


def test_an_editions_articles_are_listed_added_moved_and_dropped_while_it_may_change(
        clean, web) -> None:
    edition_id = make_edition()  # three articles, newest first
    [late] = make_articles(1)  # in the window, imported after the draft: a candidate
    client = api(web, token("newsroom", "editions:read", "editions:send"))
    reader = api(web, token("dashboard", "editions:read"))
    url = f"/editions/{edition_id}/articles"

    listed = reader.get(url).json()
    assert (listed["edition_id"], listed["state"], listed["editable"]) == (
        edition_id, "draft", True)
    first = [a["id"] for a in listed["items"]]
    assert [a["position"] for a in listed["items"]] == [1, 2, 3]
    assert [a["section"] for a in listed["items"]] == ["News", "CEP Events", "Criminal Justice"]
    assert [a["id"] for a in listed["candidates"]] == [late]
    for method, path, body in (("POST", url, {"article_id": late}),
                               ("DELETE", f"{url}/{first[0]}", None),
                               ("PATCH", f"{url}/{first[0]}", {"position": 2})):
        assert "editions:send" in is_problem(reader.request(method, path, json=body),
                                             403)["detail"]

    added = client.post(url, json={"article_id": late})
    assert added.status_code == 200, added.text
    assert [a["id"] for a in added.json()["items"]] == [*first, late]
    assert added.json()["candidates"] == []
    assert "already in this edition" in is_problem(client.post(url, json={"article_id": late}),
                                                   409)["detail"]
    assert fields(client.post(url, json={"article_id": 999999})) == {"article_id"}
    assert fields(client.post(url, json={"article_id": 0})) == {"article_id"}
    assert fields(client.post(url, json={"article": late})) == {"article_id", "article"}

    moved = client.patch(f"{url}/{late}", json={"position": 1})
    assert moved.status_code == 200, moved.text
    assert [a["id"] for a in moved.json()["items"]] == [late, *first]
    assert [a["id"] for a in client.get(f"/editions/{edition_id}").json()["article_list"]] == [
        late, *first]
    assert "outside 1–4" in is_problem(client.patch(f"{url}/{late}", json={"position": 5}),
                                       422)["errors"][0]["message"]
    assert fields(client.patch(f"{url}/{late}", json={"position": 0})) == {"position"}

    dropped = client.delete(f"{url}/{first[1]}")
    assert dropped.status_code == 200, dropped.text
    assert [a["id"] for a in dropped.json()["items"]] == [late, first[0], first[2]]
    assert [a["position"] for a in dropped.json()["items"]] == [1, 2, 3]
    assert [a["id"] for a in dropped.json()["candidates"]] == [first[1]]
    assert "not in this edition" in is_problem(client.delete(f"{url}/{first[1]}"),
                                               404)["detail"]
    is_problem(client.patch(f"{url}/{first[1]}", json={"position": 1}), 404)
    for method, path, body in (("GET", "/editions/999/articles", None),
                               ("POST", "/editions/999/articles", {"article_id": late}),
                               ("DELETE", f"/editions/999/articles/{late}", None),
                               ("PATCH", f"/editions/999/articles/{late}", {"position": 1})):
        assert "no edition" in is_problem(client.request(method, path, json=body),
                                          404)["detail"]
    assert audit(edition_id) == [(action, "api:newsroom") for action in (
        "edition.article.add", "edition.article.move", "edition.article.drop")]

    # Scheduled, nothing has gone out: it may still change (as in the admin's editor).
    client.post(f"/editions/{edition_id}/schedule",
                json={"at": iso(utcnow() + dt.timedelta(days=1))})
    assert client.post(url, json={"article_id": first[1]}).json()["state"] == "scheduled"
    client.post(f"/editions/{edition_id}/cancel")
    for method, path, body in (("POST", url, {"article_id": 999999}),
                               ("DELETE", f"{url}/{first[1]}", None),
                               ("PATCH", f"{url}/{late}", {"position": 9})):
        assert "is cancelled" in is_problem(client.request(method, path, json=body),
                                            409)["detail"], (method, path)
    gone = client.get(url).json()
    assert (gone["state"], gone["editable"], gone["candidates"]) == ("cancelled", False, [])
    assert len(gone["items"]) == 4
    assert [a for a, _ in audit(edition_id)][-3:] == [
        "edition.schedule", "edition.article.add", "edition.cancel"]


def test_a_complaint_hold_stops_every_send_until_acknowledged_through_the_api(
        rig, sending_web) -> None:
    make_subscribers(300)
    first = make_edition()
    start(first)
    with transaction() as session:  # as if the send had gone out, with one complaint
        session.execute(update(Delivery).values(state="sent"))
        sending.finish_if_done(session, first)
        delivery = session.scalars(select(Delivery).order_by(Delivery.id)).first()
        record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.complaint,
                      source="arf", delivery_id=delivery.id, attribution="verp",
                      fingerprint="c1")
    second = make_edition(subject="Next edition")
    client = api(sending_web, token("newsroom", "editions:read", "editions:send"))
    acknowledge = f"/editions/{first}/complaints/acknowledge"

    held = is_problem(client.post(f"/editions/{second}/send"), 409)
    assert [c["check"] for c in held["checks"]] == ["complaints"]
    assert f"edition {first} has a complaint rate of 0.33 %" in held["detail"]
    is_problem(api(sending_web, token("dashboard", "editions:read")).post(acknowledge), 403)
    assert "no edition" in is_problem(client.post("/editions/999/complaints/acknowledge"),
                                      404)["detail"]

    acknowledged = client.post(acknowledge)
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json() == {"edition_id": first, "complaints": 1, "hold": None}
    assert ("edition.acknowledge_complaints", "api:newsroom") in audit(first)
    sent = client.post(f"/editions/{second}/send")
    assert sent.status_code == 202, sent.text
    assert sent.json()["audience"] == 299  # the complainer is unsubscribed and suppressed
