"""The admin's Lists page: every list with its counts per status, a new list, every field of
a list changed, archiving; refusals shown beside the form with what was typed; in Chromium
and over plain HTTP. The admin's subscriber page shows each subscription, the edition
pages the edition's list, and a new edition goes to the list chosen."""

from __future__ import annotations

import lxml.html
import pytest
from sqlalchemy import select

from mailer.audit import AuditEntry
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists.models import MailingList, Subscription
from mailer.subscribers.models import Subscriber
from mailer.tokens import address_hash, random_id
from tests.support.admin import PASSWORD, Admin, flash_of, make_staff

EDITOR, VIEWER = "editor@example.org", "viewer@example.org"


def people(n: int, list_id: int, status: str) -> list[int]:
    with transaction() as session:
        rows = [Subscriber(public_id=random_id(), email=f"{status}{i}@example.net",
                           email_key=f"{status}{i}@example.net",
                           address_hash=address_hash(f"{status}{i}@example.net"), source="t")
                for i in range(n)]
        session.add_all(rows)
        session.flush()
        session.add_all(Subscription(subscriber_id=r.id, list_id=list_id, status=status)
                        for r in rows)
        return [r.id for r in rows]


def one(slug: str) -> MailingList:
    with transaction() as session:
        found = lists.by_slug(session, slug)
        assert found is not None
        session.expunge(found)
        return found


@pytest.mark.browser
def test_the_lists_page_in_chromium(clean, web, browser, artifacts) -> None:
    make_staff(EDITOR, "editor")
    with transaction() as session:
        events = lists.create(session, slug="events", name="Event announcements",
                              list_id="events.example.org")
    people(3, events.id, "confirmed")
    people(2, events.id, "pending")
    people(1, events.id, "unsubscribed")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400
            and r.url.startswith(web.url) and not r.url.endswith("/favicon.ico")
            and "/admin/lists" not in r.url else None)
    page.goto(f"{web.url}/admin/login?next=/admin/lists")
    page.get_by_label("Email address").fill(EDITOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{web.url}/admin/lists")
    row = page.locator("#list-events")
    assert row.locator("td[data-label=confirmed]").inner_text() == "3"
    assert row.locator("td[data-label=pending]").inner_text() == "2"
    assert row.locator("td[data-label=unsubscribed]").inner_text() == "1"
    page.screenshot(path=str(artifacts / f"lists-1-index-{clean.backend}.png"), full_page=True)

    # A new private list, with its own From.
    form = page.locator("#new-list")
    form.get_by_label("Slug").fill("experts")
    form.get_by_label("Name", exact=True).fill("Expert group")
    form.get_by_label("List-Id").fill("experts.example.org")
    form.get_by_label("From", exact=True).fill("CEP experts <experts@example.org>")
    form.get_by_label("Public").uncheck()
    form.get_by_role("button", name="Create list").click()
    page.wait_for_url(f"{web.url}/admin/lists/*")
    assert "List experts created." in page.get_by_role("status").inner_text()
    experts = one("experts")
    assert experts.name == "Expert group" and not experts.public
    assert experts.from_address == "CEP experts <experts@example.org>"

    # Every other field, changed on its page.
    edit = page.locator("#edit-list")
    edit.get_by_label("Description").fill("For the expert group only")
    edit.get_by_label("Reply-To").fill("experts-desk@example.org")
    edit.get_by_label("Consent text").fill("I am in the expert group.")
    edit.get_by_label("Consent version").fill("experts-1")
    edit.get_by_label("Rhythm").fill("0 8 * * 1")
    edit.get_by_label("Position").fill("7")
    edit.get_by_label("Click tracking").select_option("no")
    edit.get_by_label("A reader with none of their topics").select_option("whole")
    edit.get_by_label("Its sent editions are in the web archive").uncheck()
    edit.get_by_label("From", exact=True).fill("")  # back to the settings'
    edit.get_by_role("button", name="Save").click()
    page.wait_for_load_state()
    assert page.get_by_role("status").inner_text().startswith("Changed:")
    experts = one("experts")
    assert (experts.description, experts.reply_to, experts.consent_text,
            experts.consent_version, experts.schedule_cron, experts.position) == (
        "For the expert group only", "experts-desk@example.org", "I am in the expert group.",
        "experts-1", "0 8 * * 1", 7)
    assert experts.click_tracking is False and experts.no_topics == "whole"
    assert experts.archive is False and experts.from_address is None
    page.screenshot(path=str(artifacts / f"lists-2-list-{clean.backend}.png"), full_page=True)

    # A refusal is shown beside the form, with what was typed; nothing changes.
    edit = page.locator("#edit-list")
    edit.get_by_label("List-Id").fill("events.example.org")
    edit.get_by_label("Name", exact=True).fill("Renamed")
    edit.get_by_role("button", name="Save").click()
    page.wait_for_load_state()
    assert "has that List-Id already" in page.locator("#edit-list .flash.error").inner_text()
    assert page.locator("#edit-list").get_by_label("Name", exact=True).input_value() == "Renamed"
    assert one("experts").name == "Expert group"

    # Archive: the slug typed to confirm.
    archive = page.locator("#archive-list")
    archive.get_by_label("Archive this list").fill("experts")
    archive.get_by_role("button", name="Archive").click()
    page.wait_for_url(f"{web.url}/admin/lists")
    assert "archived" in page.locator("#list-experts").inner_text()
    assert one("experts").archived_at is not None
    assert problems == []
    with transaction() as session:
        assert [a.action for a in session.scalars(select(AuditEntry).where(
            AuditEntry.action.like("list.%")).order_by(AuditEntry.id))] == [
            "list.create", "list.edit", "list.archive"]


def test_viewers_see_the_lists_and_get_no_form(clean, web) -> None:
    make_staff(VIEWER, "viewer")
    with transaction() as session:
        events = lists.create(session, slug="events", name="Events",
                              list_id="events.example.org")
    people(2, events.id, "confirmed")
    viewer = Admin(web.url)
    viewer.login(VIEWER)
    index = viewer.get("/admin/lists")
    assert index.status_code == 200
    doc = lxml.html.fromstring(index.text)
    assert doc.xpath("string(//tr[@id='list-events']/td[@data-label='confirmed'])") == "2"
    forms = set(doc.xpath("//form[@method='post']/@action"))
    assert forms == {"/admin/logout"}
    page = viewer.get(f"/admin/lists/{events.id}")
    assert page.status_code == 200 and "events.example.org" in page.text
    assert set(lxml.html.fromstring(page.text).xpath("//form[@method='post']/@action")) == {
        "/admin/logout"}
    assert viewer.get("/admin/lists/999999").status_code == 404


def test_refusals_keep_what_was_typed(clean, web) -> None:
    make_staff(EDITOR, "editor")
    editor = Admin(web.url)
    editor.login(EDITOR)
    before = editor.get("/admin/lists").text.count("<tr id=\"list-")
    bad = editor.post("/admin/lists", {"slug": "Bad Slug", "name": "Kept name",
                                       "list_id": "kept.example.org", "public": "yes"})
    assert bad.status_code == 422 and "the slug is" in bad.text
    doc = lxml.html.fromstring(bad.text)
    assert doc.xpath("//input[@name='name']/@value") == ["Kept name"]
    for fields, words in [
        ({"slug": "ok", "name": "", "list_id": "ok.example.org"}, "needs a name"),
        ({"slug": "ok", "name": "Ok", "list_id": "nodots"}, "RFC 2919"),
        ({"slug": "ok", "name": "Ok", "list_id": "ok.example.org", "position": "x"},
         "whole number"),
        ({"slug": "ok", "name": "Ok", "list_id": "ok.example.org", "schedule_cron": "daily"},
         "five crontab"),
        ({"slug": "ok", "name": "Ok", "list_id": "ok.example.org", "no_topics": "half"},
         "no_topics"),
        ({"slug": "embed", "name": "Ok", "list_id": "ok.example.org"}, "taken by a page"),
    ]:
        answer = editor.post("/admin/lists", fields)
        assert answer.status_code == 422, fields
        assert words in answer.text, fields
    assert editor.get("/admin/lists").text.count("<tr id=\"list-") == before
    made = editor.post("/admin/lists", {"slug": "ok", "name": "Ok", "list_id": "ok.example.org",
                                        "public": "yes", "archive": "yes"})
    assert made.status_code == 303
    page = editor.follow(made)
    assert flash_of(page.text) == "ok: List ok created."
    ok = one("ok")
    wrong = editor.post(f"/admin/lists/{ok.id}/archive", {"confirm": "not-it"})
    assert "type the list's slug" in flash_of(editor.follow(wrong).text)
    assert one("ok").archived_at is None


def test_an_edition_goes_to_the_list_chosen(clean, web) -> None:
    from mailer.editions.models import Edition
    from tests.support.factories import make_articles

    make_staff(EDITOR, "editor")
    with transaction() as session:
        events = lists.create(session, slug="events", name="Event announcements",
                              list_id="events.example.org")
        old = lists.create(session, slug="old", name="Old", list_id="old.example.org")
        lists.archive(session, old)
    people(2, events.id, "confirmed")
    make_articles(3)
    editor = Admin(web.url)
    editor.login(EDITOR)
    index = lxml.html.fromstring(editor.get("/admin/editions").text)
    options = {o.get("value"): o.text_content()
               for o in index.xpath("//select[@name='list']/option")}
    assert set(options) == {"newsletter", "events"}  # not the archived one
    assert "2 readers now" in options["events"]
    assert index.xpath("//select[@name='list']/option[@selected]/@value") == ["newsletter"]

    for slug, words in (("nosuch", "no open list 'nosuch'"), ("old", "no open list 'old'")):
        refused = editor.post("/admin/editions", {"list": slug})
        assert words in flash_of(editor.follow(refused).text)
    with transaction() as session:
        assert session.scalars(select(Edition)).all() == []

    made = editor.post("/admin/editions", {"list": "events"})
    page = editor.follow(made)
    assert "drafted with 3 article(s)" in flash_of(page.text)
    with transaction() as session:
        edition = session.scalars(select(Edition)).one()
        assert edition.list_id == events.id
        assert edition.subject.startswith("Event announcements")
    doc = lxml.html.fromstring(page.text)
    assert doc.xpath("string(//a[@id='edition-list'])") == "Event announcements"
    send = lxml.html.fromstring(editor.get(f"/admin/editions/{edition.id}/send").text)
    assert send.xpath("string(//*[@id='edition-list'])") == "Event announcements"
    listed = lxml.html.fromstring(editor.get("/admin/editions").text)
    assert listed.xpath("string(//td[@data-label='List'])") == "Event announcements"
    # Without a list named: the default list, as before.
    editor.follow(editor.post("/admin/editions", {"since": "2000-01-01"}))
    with transaction() as session:
        assert sorted(e.list_id for e in session.scalars(select(Edition))) == sorted(
            [events.id, lists.default_list(session).id])


def test_import_export_and_search_per_list(clean, web) -> None:
    make_staff(EDITOR, "editor")
    with transaction() as session:
        experts = lists.create(session, slug="experts", name="Experts",
                               list_id="experts.example.org", public=False)
    people(1, 1, "confirmed")  # on the first list
    editor = Admin(web.url)
    editor.login(EDITOR)
    form = lxml.html.fromstring(editor.get("/admin/subscribers-import").text)
    assert form.xpath("//select[@name='list']/option/@value") == ["newsletter", "experts"]
    assert form.xpath("//select[@name='list']/option[@selected]/@value") == ["newsletter"]

    csv_text = "email,first_name\nexpert1@example.org,Eva\nconfirmed0@example.net,X\n"
    answer = editor.http.post("/admin/subscribers-import", data={
        "csrf": editor.csrf, "source": "expert meeting", "list": "experts"},
        files={"file": ("experts.csv", csv_text.encode(), "text/csv")})
    assert answer.status_code == 200, answer.text
    assert "imported 2, skipped 0" in answer.text and "(to experts)" in answer.text
    with transaction() as session:
        held = {s.email: sub.status for s, sub in session.execute(
            select(Subscriber, Subscription)
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .where(Subscription.list_id == experts.id))}
    assert held == {"expert1@example.org": "confirmed", "confirmed0@example.net": "confirmed"}
    wrong = editor.http.post("/admin/subscribers-import", data={
        "csrf": editor.csrf, "source": "x", "list": "nosuch"},
        files={"file": ("x.csv", b"email\nx@example.org\n", "text/csv")})
    assert "no open list 'nosuch'" in flash_of(editor.follow(wrong).text)

    export = editor.get("/admin/subscribers-export.csv", params={"list": "experts"})
    assert export.status_code == 200
    assert 'filename="subscribers-experts.csv"' in export.headers["content-disposition"]
    rows = export.text.strip().splitlines()
    assert len(rows) == 3 and "expert1@example.org" in export.text
    default = editor.get("/admin/subscribers-export.csv").text
    assert "expert1@example.org" not in default and "confirmed0@example.net" in default
    assert editor.get("/admin/subscribers-export.csv", params={"list": "nosuch"}
                      ).status_code == 404

    found = lxml.html.fromstring(editor.get("/admin/subscribers", params={
        "list": "experts"}).text)
    addresses = found.xpath("//table//td/a/text()")
    assert sorted(addresses) == ["confirmed0@example.net", "expert1@example.org"]
    first = lxml.html.fromstring(editor.get("/admin/subscribers", params={
        "list": "newsletter"}).text)
    assert first.xpath("//table//td/a/text()") == ["confirmed0@example.net"]

    # The subscriber's page: each list, its status, the topics followed.
    with transaction() as session:
        person = session.scalars(select(Subscriber).where(
            Subscriber.email == "confirmed0@example.net")).one()
    page = lxml.html.fromstring(editor.get(f"/admin/subscribers/{person.id}").text)
    cells = [" ".join(r.xpath(".//td//text()")) for r in page.xpath(
        "//tr[td[@data-label='List']]")]
    assert any("Experts" in c and "confirmed" in c and "all" in c for c in cells), cells
    assert len(cells) == 2
