"""More of ``/api/v1`` over real HTTP against the test web server (both databases): a
subscriber's name changed (and an address change refused), confirmed readers imported
with their consent's origin, articles imported, bounces listed, the figures as JSON; and
the rules the routes share with the admin and the CLI, now kept by the services (an
erasure's suppression stays; an export is audited by whoever takes it)."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from mailer import privacy
from mailer.articles.models import Article
from mailer.audit import AuditEntry
from mailer.bounces.intake import receive
from mailer.bounces.models import Bounce
from mailer.config import get_settings
from mailer.db import transaction
from mailer.lists.models import Subscription
from mailer.ops import alerts
from mailer.subscribers.addresses import key_hash
from mailer.subscribers.models import ConsentEvent, Subscriber
from mailer.suppression import service as suppression_service
from tests import test_articles
from tests.support.bounce_mail import (
    dsn,
    make_delivery,
    make_reader,
    make_sent_edition,
    newsletter_id,
    original_headers,
    verp_of,
)
from tests.support.bounce_reading import OURS
from tests.support.factories import BOUNCES, stack_keys
from tests.support.subscribers import events, list_status, make, subscriber
from tests.test_api import api, audit_actions, fields, is_problem, token

feed_server = test_articles.feed_server  # a real HTTP server on loopback with the fixtures


def test_a_subscribers_name_fields_are_changed_and_audited_but_not_the_address(
        clean, web) -> None:
    reader = make("Name@Example.org", "confirmed", first_name="Ana")
    writing = api(web, token("crm", "subscribers:write"))
    is_problem(api(web, token("reader", "subscribers:read")).patch(
        f"/subscribers/{reader.public_id}", json={"first_name": "X"}), 403)

    answer = writing.patch(f"/subscribers/{reader.public_id}",
                           json={"first_name": "  Anna ", "organisation": "Verein e.V.",
                                 "last_name": None})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["changed"] == ["first_name", "organisation"]
    assert (body["subscriber"]["first_name"], body["subscriber"]["organisation"]) == (
        "Anna", "Verein e.V.")
    stored = subscriber("name@example.org")
    assert (stored.first_name, stored.last_name, stored.organisation) == (
        "Anna", "", "Verein e.V.")
    target = f"subscriber:{reader.id}"
    assert audit_actions(target)[-1] == ("subscriber.update", "api:crm")
    with transaction() as session:
        [entry] = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "subscriber.update")).all()
        assert entry.detail == {"fields": ["first_name", "organisation"]}  # no values

    same = writing.patch(f"/subscribers/{reader.public_id}", json={"first_name": "Anna"})
    assert same.json()["changed"] == []  # nothing changed: nothing audited
    assert [a for a, _ in audit_actions(target)].count("subscriber.update") == 1

    # The address is never changed here (it would skip the new address's double opt-in).
    moved = writing.patch(f"/subscribers/{reader.public_id}",
                          json={"email": "new@example.org", "first_name": "B"})
    problem = is_problem(moved, 422)
    assert [e["field"] for e in problem["errors"]] == ["email"]
    assert "double opt-in" in problem["errors"][0]["message"]
    assert subscriber("name@example.org").first_name == "Anna"
    assert subscriber("new@example.org") is None

    assert fields(writing.patch(f"/subscribers/{reader.public_id}",
                                json={"last_name": "x\nBcc: y"})) == {"last_name"}
    assert fields(writing.patch(f"/subscribers/{reader.public_id}",
                                json={"country": "x" * 101})) == {"country"}
    assert fields(writing.patch(f"/subscribers/{reader.public_id}",
                                json={"first_name": "\ue000"})) == {"first_name"}
    assert fields(writing.patch(f"/subscribers/{reader.public_id}",
                                json={"status": "confirmed"})) == {"status"}
    is_problem(writing.patch("/subscribers/nobody", json={"first_name": "A"}), 404)
    assert list_status("name@example.org") == "confirmed"


def test_a_name_change_does_not_keep_an_unconfirmed_sign_up_from_its_purge(clean, web) -> None:
    pending = make("late@example.org", "pending")
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    with transaction() as session:
        session.execute(update(Subscriber).where(Subscriber.id == pending.id)
                        .values(updated_at=long_ago))
        session.execute(update(Subscription).where(Subscription.subscriber_id == pending.id)
                        .values(updated_at=long_ago))  # the sign-up, long ago
    answer = api(web, token("crm", "subscribers:write")).patch(
        f"/subscribers/{pending.public_id}", json={"first_name": "Lea"})
    assert answer.json()["changed"] == ["first_name"]
    with transaction() as session:
        assert privacy.purge_pending(session, older_than=dt.timedelta(days=14)) == 1
    assert subscriber("late@example.org") is None


def test_an_erasures_suppression_is_kept_by_the_service_itself(clean, web) -> None:
    erased = make("gone@example.org", "confirmed")
    with transaction() as session:
        privacy.erase(session, session.get(Subscriber, erased.id), by="test")
    # Signed up again but not confirmed: the erasure's entry still holds, and the lift on
    # the subscriber's own admin page goes through the same rule.
    make("gone@example.org", "pending")
    with transaction() as session, pytest.raises(suppression_service.ErasureKept):
        suppression_service.unsuppress(session, erased.address_hash, by="test")
    is_problem(api(web, token("ops", "suppressions")).delete(
        f"/suppressions/{erased.address_hash}"), 409)
    with transaction() as session:
        assert suppression_service.is_suppressed(session, erased.address_hash)
        assert suppression_service.unsuppress(session, erased.address_hash, by="test",
                                              force=True)
        assert not suppression_service.is_suppressed(session, erased.address_hash)


def test_an_export_is_audited_by_the_export_itself(clean) -> None:
    reader = make("asked@example.org", "confirmed")
    with transaction() as session:
        data = privacy.export(session, session.get(Subscriber, reader.id), by="cli:ops")
    assert data["email"] == "asked@example.org"
    assert audit_actions(f"subscriber:{reader.id}") == [("subscriber.export", "cli:ops")]


def test_confirmed_readers_are_imported_with_where_their_consent_came_from(clean, web) -> None:
    make("left@example.org", "unsubscribed")
    with transaction() as session:
        suppression_service.suppress(session, key_hash("bounced@example.org"),
                                     reason="hard_bounce")
    body = {"source": "members 2025 form", "consent_version": "2025-01",
            "consent_text": "I want the newsletter.\nI can leave any time.",
            "evidence": "signed sheets in the office",
            "items": [{"email": "New.One@Example.org", "first_name": "New",
                       "consented_at": "2025-02-01"},
                      {"email": "not-an-address"},
                      {"email": "new.one@example.org"},
                      {"email": "left@example.org"},
                      {"email": "Bounced@example.org"},
                      {"email": "when@example.org", "consented_at": "yesterday"}]}
    is_problem(api(web, token("form", "subscribers:write")).post(
        "/subscribers/import", json=body), 403)  # a sign-up token cannot skip opt-in
    client = api(web, token("crm", "subscribers:import"))
    answer = client.post("/subscribers/import", json=body)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["imported"], report["skipped"]) == (1, 5)
    assert [(i["index"], i["result"]) for i in report["items"]] == [
        (0, "imported"), (1, "invalid"), (2, "duplicate"), (3, "exists"), (4, "suppressed"),
        (5, "invalid")]
    new = subscriber("new.one@example.org")
    assert report["items"][0]["public_id"] == new.public_id
    assert list_status("new.one@example.org") == "confirmed"
    assert new.source == "members 2025 form" and new.first_name == "New"
    assert "suppression list" in report["items"][4]["detail"]
    assert all(i["detail"] for i in report["items"][1:])
    with transaction() as session:
        [event] = session.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == new.id)).all()
        assert (event.kind, event.source, event.consent_version, event.consent_text) == (
            "imported", "members 2025 form", "2025-01", body["consent_text"])
        assert event.detail == {"line": 1, "consented_at": "2025-02-01", "by": "api:crm",
                                "evidence": "signed sheets in the office"}
    assert subscriber("bounced@example.org") is None  # suppressed: not brought back
    assert list_status("left@example.org") == "unsubscribed"  # left: stays gone
    assert events(subscriber("left@example.org").id)[-1] == "unsubscribed"
    [(action, actor)] = audit_actions("api:crm")
    assert (action, actor) == ("subscribers.import", "api:crm")

    assert fields(client.post("/subscribers/import", json={**body, "items": []})) == {"items"}
    too_many = {**body, "items": [{"email": f"r{i}@example.org"} for i in range(501)]}
    assert fields(client.post("/subscribers/import", json=too_many)) == {"items"}
    no_source = {k: v for k, v in body.items() if k != "source"}
    assert fields(client.post("/subscribers/import", json=no_source)) == {"source"}
    assert fields(client.post("/subscribers/import", json={
        **body, "items": [{"email": "a@example.org", "status": "confirmed"}]})) == {
            "items.0.status"}
    assert subscriber("r0@example.org") is None


def articles() -> list[tuple[str, str]]:
    with transaction() as session:
        return [(a.title, a.source) for a in session.scalars(select(Article).order_by(
            Article.id))]


def test_articles_are_imported_from_a_feed_address_as_the_admin_fetches_them(
        clean, web, feed_server) -> None:
    is_problem(api(web, token("send", "editions:send")).post(
        "/articles/import", json={"url": f"{feed_server}/cep-feed.xml"}), 403)
    client = api(web, token("site", "articles"))
    first = client.post("/articles/import", json={"url": f"{feed_server}/cep-feed.xml"})
    assert first.status_code == 200, first.text
    assert first.json() == {"source": f"{feed_server}/cep-feed.xml", "created": 7,
                            "updated": 0, "unchanged": 0, "problems": []}
    again = client.post("/articles/import", json={"url": f"{feed_server}/cep-feed.xml"})
    assert (again.json()["created"], again.json()["unchanged"]) == (0, 7)
    assert audit_actions(f"{feed_server}/cep-feed.xml") == [("articles.import", "api:site")] * 2

    # A feed that cannot be had is a problem naming the url, never a 5xx; nothing stored.
    for url, says in ((f"{feed_server}/nothing.xml", "HTTP 404"),
                      (f"{feed_server}/not-a-feed.html", "not an RSS or Atom feed"),
                      ("http://169.254.169.254/latest/meta-data/", "public addresses"),
                      ("http://10.0.0.1/feed", "private address"),
                      ("http://127.0.0.1:1/feed", "could not be fetched"),
                      ("http://[::1/feed", "web address"),
                      ("file:///etc/passwd", "web address"),
                      ("/etc/passwd", "web address")):
        answer = client.post("/articles/import", json={"url": url})
        problem = is_problem(answer, 422)
        assert says in problem["detail"], (url, problem)
        assert [e["field"] for e in problem["errors"]] == ["url"]
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Article)) == 7


def test_articles_are_imported_from_items_checked_as_a_feed_file_is(clean, web) -> None:
    client = api(web, token("site", "articles"))
    post = {"id": "https://example.org/?p=1", "url": "https://example.org/news/one",
            "title": "One", "date_published": "2025-03-01T09:30:00+01:00",
            "tags": ["News"], "author": "Ana",
            "content_html": '<p>Hello <script>alert(1)</script><b>there</b></p>',
            "image": {"url": "https://example.org/one.jpg", "width": 800, "height": 400}}
    answer = client.post("/articles/import", json={"items": [
        post, {**post, "id": "2", "url": "javascript:alert(1)"},
        {**post, "id": "3", "date_published": "someday"}]})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["source"], report["created"]) == ("api:site", 1)
    assert len(report["problems"]) == 2 and "not an absolute http(s) address" in \
        report["problems"][0] and "publication date" in report["problems"][1]
    with transaction() as session:
        [article] = session.scalars(select(Article)).all()
        assert article.guid == "https://example.org/?p=1" and article.source == "api:site"
        assert "script" not in article.summary_html and "<b>there</b>" in article.summary_html
        assert (article.image_url, article.image_width) == ("https://example.org/one.jpg", 800)
        assert article.published_utc_offset == 60
    edited = client.post("/articles/import", json={"items": [{**post, "title": "One, again"}]})
    assert (edited.json()["created"], edited.json()["updated"]) == (0, 1)
    assert articles() == [("One, again", "api:site")]

    assert fields(client.post("/articles/import", json={})) == {"body"}
    assert fields(client.post("/articles/import", json={
        "url": "https://example.org/feed", "items": [post]})) == {"body"}
    assert fields(client.post("/articles/import", json={"items": []})) == {"items"}
    assert fields(client.post("/articles/import", json={
        "items": [post] * 101})) == {"items"}
    assert fields(client.post("/articles/import", json={
        "items": [{**post, "body": "x"}]})) == {"items.0.body"}


def test_bounces_are_listed_by_keyset_filtered_and_without_the_raw_mail(clean, web) -> None:
    def take_in(raw: bytes, envelope: list[str]) -> None:
        with transaction() as session:
            receive(session, raw=raw, ours=OURS, source="mx", bounces=BOUNCES, keys=stack_keys(),
                    envelope_to=envelope)

    edition = make_sent_edition()
    for name, status, words in (("hard", "5.1.1", "550 5.1.1 User unknown"),
                                ("soft", "4.2.2", "452 4.2.2 Mailbox full")):
        email = f"{name}@example.net"
        delivery = make_delivery(edition, make_reader(email))
        verp = verp_of(delivery)
        take_in(dsn(to_verp=verp, recipients=[(email, "failed", status, words)],
                    original=original_headers(email, newsletter_id(edition, delivery), verp)
                    + "\r\nA private line of the newsletter body\r\n"), [verp])
    make_reader("forged@example.net")
    bounce_address = f"bounces@{get_settings().identity.bounce_domain}"
    take_in(dsn(to_verp=bounce_address, recipients=[
        ("forged@example.net", "failed", "5.1.1", "550 5.1.1 User unknown")]), [])
    with transaction() as session:
        stored = {b.recipient: b for b in session.scalars(select(Bounce))}
        public = {s.email: s.public_id for s in session.scalars(select(Subscriber))}
    assert len(stored) == 3 and all(b.raw_excerpt for b in stored.values())
    assert "private line" in stored["hard@example.net"].raw_excerpt

    is_problem(api(web, token("crm", "subscribers:read")).get("/bounces"), 403)
    client = api(web, token("ops", "bounces:read"))
    seen, after = [], None
    while True:
        answer = client.get("/bounces", params={"limit": 2, **({"after": after} if after
                                                                   else {})})
        assert answer.status_code == 200, answer.text
        seen += answer.json()["items"]
        after = answer.json()["next"]
        if after is None:
            break
    assert [b["recipient"] for b in seen] == ["hard@example.net", "soft@example.net",
                                              "forged@example.net"]
    hard = seen[0]
    assert (hard["bounce_class"], hard["trust"], hard["action"], hard["edition_id"]) == (
        "hard", "verified", "suppressed", edition)
    assert hard["subscriber"] == public["hard@example.net"] and hard["attribution"] == "verp"
    assert "User unknown" in hard["diagnostic"] and hard["status_code"] == "5.1.1"
    forged = seen[2]
    assert (forged["trust"], forged["subscriber"], forged["unverified_reason"]) == (
        "unverified", None, "no-token")
    assert forged["claimed_subscriber"] == public["forged@example.net"]
    # No raw mail in the list: not the excerpt, not a line of it.
    for item in seen:
        assert "raw_excerpt" not in item
        assert "private line" not in str(item)

    def recipients(**params: str) -> list[str]:
        answer = client.get("/bounces", params=params)
        assert answer.status_code == 200, answer.text
        return [b["recipient"] for b in answer.json()["items"]]

    assert recipients(**{"class": "hard"}) == ["hard@example.net", "forged@example.net"]
    assert recipients(trust="unverified") == ["forged@example.net"]
    assert recipients(trust="verified", **{"class": "soft"}) == ["soft@example.net"]
    assert recipients(trust="confirmed") == []
    assert recipients(after=str(seen[1]["id"])) == ["forged@example.net"]  # polling on
    assert recipients(after=str(2**31)) == []
    assert fields(client.get("/bounces", params={"class": "nasty"})) == {"class"}
    assert fields(client.get("/bounces", params={"trust": "maybe"})) == {"trust"}
    assert fields(client.get("/bounces", params={"after": "-1"})) == {"after"}
    assert fields(client.get("/bounces", params={"limit": 201})) == {"limit"}
    assert fields(client.get("/bounces", params={"klass": "hard"})) == {"klass"}


def test_the_stats_are_the_figures_of_metrics_as_json(clean, web) -> None:
    for i in range(3):
        make(f"c{i}@example.org", "confirmed")
    make("p@example.org", "pending")
    with transaction() as session:
        suppression_service.suppress(session, key_hash("x@example.org"), reason="manual",
                                     by="test")
    is_problem(api(web, token("crm", "subscribers:read")).get("/stats"), 403)
    answer = api(web, token("dashboard", "editions:read")).get("/stats")
    assert answer.status_code == 200, answer.text
    figures = answer.json()["figures"]

    def values(name: str, label: str) -> dict[str, float]:
        return {s["labels"][label]: s["value"] for s in figures[name]["samples"]}

    assert values("mailer_subscribers", "status") == {"confirmed": 3.0, "pending": 1.0}
    assert values("mailer_suppressions", "reason") == {"manual": 1.0}
    assert figures["mailer_database_up"]["samples"][0]["value"] == 1.0
    assert figures["mailer_redis_up"]["samples"][0]["value"] == 1.0
    assert figures["mailer_subscribers"]["type"] == "gauge"
    assert figures["mailer_messages_sent"]["type"] == "counter"
    assert figures["mailer_smtp_latency_seconds"]["type"] == "histogram"
    assert set(values("mailer_alert", "alert")) == set(alerts.NAMES)

    scraped = httpx.get(f"{web.url}/metrics", timeout=30)
    assert scraped.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    assert set(families) == set(figures)  # the same figures, every family
    assert {s.labels["status"]: s.value for s in families["mailer_subscribers"].samples} == \
        values("mailer_subscribers", "status")


def stored_article(title: str, published_at: dt.datetime, *categories: str) -> int:
    with transaction() as session:
        article = Article(guid=f"https://example.org/{title}", link="https://example.org/a",
                          title=title, published_at=published_at,
                          categories=list(categories), summary_text=f"About {title}.")
        session.add(article)
        session.flush()
        return article.id


def test_articles_are_listed_newest_first_by_keyset_filtered_and_read_one(
        clean, web) -> None:
    zone = get_settings().identity.zone
    at = dt.datetime(2026, 3, 1, 23, 30, tzinfo=dt.UTC)
    day = at.astimezone(zone).date()  # the day of the association, not of UTC
    ids = {
        "old": stored_article("Old news", at - dt.timedelta(days=40), "News"),
        "twin_a": stored_article("Twin A", at, "CEP Events", "News"),
        "twin_b": stored_article("Twin B", at, "Newsroom"),
        "quote": stored_article("Quoted", at - dt.timedelta(days=1), 'Big "News'),
        "pct": stored_article("A 100% probation year", at + dt.timedelta(days=1)),
    }
    client = api(web, token("composer", "editions:read"))
    assert "editions:read" in is_problem(api(web, token("hook", "articles")).get(
        "/articles"), 403)["detail"]

    seen, after = [], None
    while True:  # the twins share their time: the id decides, and no page repeats one
        body = client.get("/articles", params={"limit": 2, **({"after": after}
                                                               if after else {})}).json()
        seen += [a["id"] for a in body["items"]]
        after = body["next"]
        if after is None:
            break
    assert seen == [ids["pct"], ids["twin_b"], ids["twin_a"], ids["quote"], ids["old"]]

    def listed(**params: str) -> list[int]:
        answer = client.get("/articles", params=params)
        assert answer.status_code == 200, answer.text
        return [a["id"] for a in answer.json()["items"]]

    assert listed(since=str(day), until=str(day)) == [ids["twin_b"], ids["twin_a"]]
    assert listed(until=str(day - dt.timedelta(days=1))) == [ids["quote"], ids["old"]]
    assert listed(since=str(day + dt.timedelta(days=1))) == [ids["pct"]]
    assert listed(category="News") == [ids["twin_a"], ids["old"]]  # exactly, and any of them
    assert listed(category='Big "News') == [ids["quote"]]
    assert listed(category="news") == []
    assert listed(title="TWIN") == [ids["twin_b"], ids["twin_a"]]
    assert listed(title="100%") == [ids["pct"]] and listed(title="%") == [ids["pct"]]
    assert listed(since="0001-01-01", until="9999-12-31") == seen  # the calendar's ends
    assert listed(after=str(ids["twin_b"]), category="News") == [ids["twin_a"], ids["old"]]
    assert listed(after="999999") == [] and listed(after="9" * 18) == []

    one = client.get(f"/articles/{ids['twin_a']}").json()
    assert one == next(a for a in client.get("/articles").json()["items"]
                       if a["id"] == ids["twin_a"])
    assert (one["title"], one["categories"], one["summary"]) == (
        "Twin A", ["CEP Events", "News"], "About Twin A.")
    assert dt.datetime.fromisoformat(one["published_at"]) == at
    assert "no article" in is_problem(client.get("/articles/999999"), 404)["detail"]
    assert fields(client.get("/articles/0")) == {"article_id"}
    assert fields(client.get("/articles", params={"since": "yesterday"})) == {"since"}
    assert fields(client.get("/articles", params={"since": "2026-03-02",
                                                  "until": "2026-03-01"})) == {"until"}
    assert fields(client.get("/articles", params={"limit": 201})) == {"limit"}
    assert fields(client.get("/articles", params={"after": "-1"})) == {"after"}
    assert fields(client.get("/articles", params={"title": "a\nb"})) == {"title"}
    assert fields(client.get("/articles", params={"categroy": "News"})) == {"categroy"}
