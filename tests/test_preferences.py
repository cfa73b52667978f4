"""The reader's preference page (/preferences/<token>), over HTTP against the web app, with
the session's real worker sending to the tests' SMTP server.

A forged or altered link is a 404 that changes nothing; each change is a consent event;
the data goes to the address only after the click on the link mailed there (never to the
page); the erasure only after its own link; the link is in every digest and welcome mail
(tests/test_welcome_mail.py checks the welcome's)."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from sqlalchemy import select

from mailer.config import get_settings
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists import topics
from mailer.lists.models import Subscription
from mailer.subscribers.models import ConsentEvent, Suppression
from mailer.subscribers.unsubscribe import (
    preferences_url,
    preferences_url_for,
    unsubscribe_url,
)
from mailer.tokens import address_hash, random_id
from tests.conftest import wait_for
from tests.support.factories import (
    make_articles,
    make_edition,
    make_subscribers,
    stack_keys,
    start,
    wait_sent,
)
from tests.support.mail import links, parse, parts
from tests.support.subscribers import (
    event_rows,
    events,
    list_status,
    make,
    path,
    settle_confirmation_tasks,  # noqa: F401
    subscriber,
)

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _client(web) -> httpx.Client:  # type: ignore[no-untyped-def]
    return httpx.Client(base_url=web.url, follow_redirects=False,
                        headers={"user-agent": "prefs-test/1.0"})


def _open(client: httpx.Client, url: str) -> str:
    """GET the page (which sets the nonce cookie); the CSRF token of its forms."""
    answer = client.get(path(url))
    assert answer.status_code == 200, answer.text
    return CSRF.findall(answer.text)[0]


def _state(email: str) -> tuple[object, ...]:
    sub = subscriber(email)
    assert sub is not None
    return list_status(email), sub.first_name, sub.last_name, tuple(map(str, event_rows(sub.id)))


def _mails_to(clean, address: str, count: int) -> list:  # type: ignore[no-untyped-def]
    return wait_for(lambda: (m := clean.smtp.to(address)) and len(m) >= count and m,
                    what=f"mail #{count} to {address}")


def _confirm_link(received) -> str:  # type: ignore[no-untyped-def]
    text, html = parts(parse(received))
    [link] = [u for u in links(text) if "/preferences/confirm/" in u]
    assert link in html
    return link


def test_a_forged_or_altered_link_is_a_404_that_changes_nothing(clean, web) -> None:
    anna = make("anna.prefs@example.org", "confirmed", first_name="Anna")
    base = get_settings().base_url
    real = preferences_url(anna, base_url=base, keys=stack_keys())
    client = _client(web)
    csrf = _open(client, real)
    before = _state(anna.email)

    token = real.rsplit("/", 1)[1]
    public_id, signature = token.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    forged = [
        f"{public_id}.{flipped}",  # the signature altered
        f"{public_id}.{signature[:-2]}",  # cut short
        # signed for unsubscribing
        unsubscribe_url(anna, base_url=base, keys=stack_keys()).rsplit("/", 1)[1],
        # nobody's
        preferences_url_for(random_id(), base_url=base, keys=stack_keys()).rsplit("/", 1)[1],
        f"{random_id()}.{signature}",  # another id under Anna's signature
        "x" * 55, "%C3%A9" * 10,
    ]
    for bad in forged:
        assert client.get(f"/preferences/{bad}").status_code == 404, bad
        for action in ("name", "leave", "export", "erase", "topics", "join"):
            answer = client.post(f"/preferences/{bad}/{action}",
                                 data={"csrf": csrf, "first_name": "Mallory"})
            assert answer.status_code == 404, (bad, action)
        for confirm in (f"{bad}", f"{public_id}.export.1800000000.{signature}"):
            assert client.get(f"/preferences/confirm/{confirm}").status_code == 404
            assert client.post(f"/preferences/confirm/{confirm}",
                               data={"csrf": csrf}).status_code == 404
    # The real link without the page's CSRF token (another site posting the form): 403.
    for action in ("name", "leave", "export", "erase", "topics", "join"):
        stranger = _client(web)
        answer = stranger.post(f"{path(real)}/{action}",
                               data={"csrf": csrf, "first_name": "Mallory"})
        assert answer.status_code == 403, action
        assert client.post(f"{path(real)}/{action}", data={"first_name": "Mallory"}
                           ).status_code == 403
    assert _state(anna.email) == before
    assert clean.smtp.to(anna.email) == []


def test_each_change_is_a_consent_event_with_its_channel(clean, web) -> None:
    ida = make("ida.prefs@example.org", "confirmed", first_name="Ida")
    url = preferences_url(ida, base_url=get_settings().base_url, keys=stack_keys())
    client = _client(web)
    csrf = _open(client, url)
    assert "ida.prefs@example.org" in client.get(path(url)).text

    answer = client.post(f"{path(url)}/name",
                         data={"csrf": csrf, "first_name": "Ida Maria", "last_name": "Björk"})
    assert answer.status_code == 200 and "Your name is saved." in answer.text
    sub = subscriber(ida.email)
    assert sub is not None and (sub.first_name, sub.last_name) == ("Ida Maria", "Björk")
    [name_changed] = [e for e in event_rows(ida.id) if e["kind"] == "name_changed"]
    assert name_changed["channel"] == "preferences"
    assert name_changed["detail"] == {"fields": ["first_name", "last_name"]}
    assert name_changed["user_agent"] == "prefs-test/1.0"

    # A value the sign-up form refuses is refused beside its field; nothing recorded.
    answer = client.post(f"{path(url)}/name",
                         data={"csrf": csrf, "first_name": "x\r\nBcc: a@b.c", "last_name": ""})
    assert answer.status_code == 422 and "line breaks" in answer.text
    # The same name again changes nothing and records nothing.
    client.post(f"{path(url)}/name",
                data={"csrf": csrf, "first_name": "Ida Maria", "last_name": "Björk"})
    assert events(ida.id).count("name_changed") == 1
    sub = subscriber(ida.email)
    assert sub is not None and sub.first_name == "Ida Maria"

    # Leaving: the unsubscribe service, recorded with the page's channel; once.
    for _ in range(2):
        answer = client.post(f"{path(url)}/leave", data={"csrf": csrf})
        assert answer.status_code == 200 and "You are not subscribed" in answer.text
    assert list_status(ida.email) == "unsubscribed"
    left = [e for e in event_rows(ida.id) if e["kind"] == "unsubscribed"]
    assert [e["channel"] for e in left] == ["preferences"]

    # Asking for the data and for the erasure: recorded, and a confirmation mail queued.
    for action, kind in (("export", "export_requested"), ("erase", "erasure_requested")):
        answer = client.post(f"{path(url)}/{action}", data={"csrf": csrf})
        assert answer.status_code == 200 and "Please check your inbox" in answer.text
        [asked] = [e for e in event_rows(ida.id) if e["kind"] == kind]
        assert asked["channel"] == "preferences" and asked["ip"]
    # The page itself never shows the data.
    assert "consent_history" not in client.get(path(url)).text


def test_the_data_goes_to_the_address_only_after_the_confirmation_click(
        clean, web, worker) -> None:
    bea = make("bea.prefs@example.org", "confirmed", first_name="Bea")
    url = preferences_url(bea, base_url=get_settings().base_url, keys=stack_keys())
    client = _client(web)
    csrf = _open(client, url)
    answer = client.post(f"{path(url)}/export", data={"csrf": csrf})
    assert answer.status_code == 200 and "consent_history" not in answer.text

    [request] = _mails_to(clean, bea.email, 1)
    msg = parse(request)
    assert msg["Subject"].startswith("Please confirm: send my data")
    assert msg.get_content_type() == "multipart/alternative"  # no attachment: only a link
    assert request.mail_from.startswith("bounces+p")
    link = _confirm_link(request)
    wait_for(lambda: "request_mailed" in events(bea.id), what="the request mail recorded")
    assert "export_confirmed" not in events(bea.id)

    # Opening the link (a mail scanner does) changes nothing and sends nothing.
    confirm_csrf = _open(client, link)
    assert "export_confirmed" not in events(bea.id)
    # A second request the same day: limited as the sign-up's confirmation mails are.
    assert client.post(f"{path(url)}/export", data={"csrf": csrf}).status_code == 429
    assert events(bea.id).count("export_requested") == 1

    for _ in range(2):  # a second press does not send it twice
        answer = client.post(path(link), data={"csrf": confirm_csrf})
        assert answer.status_code == 200 and "on its way" in answer.text
        assert "consent_history" not in answer.text and "bea.prefs" in answer.text
    assert events(bea.id).count("export_confirmed") == 1

    mails = _mails_to(clean, bea.email, 2)
    export = parse(mails[1])
    assert export["Subject"].startswith("Your data from the ")
    assert export.get_content_type() == "multipart/mixed"
    [attachment] = list(export.iter_attachments())
    assert attachment.get_filename() == "my-data.json"
    assert attachment.get_content_type() == "application/json"
    data = json.loads(attachment.get_content())
    assert data["email"] == bea.email and data["first_name"] == "Bea"
    kinds = [e["event"] for e in data["consent_history"]]
    assert kinds[:2] == ["subscribed", "confirmed"] and "export_confirmed" in kinds
    wait_for(lambda: "data_exported" in events(bea.id), what="the export recorded")
    assert len(clean.smtp.to(bea.email)) == 2
    assert events(bea.id).count("data_exported") == 1


def test_the_erasure_waits_for_its_confirmation_link(clean, web, worker) -> None:
    carl = make("carl.prefs@example.org", "confirmed")
    url = preferences_url(carl, base_url=get_settings().base_url, keys=stack_keys())
    client = _client(web)
    csrf = _open(client, url)
    assert client.post(f"{path(url)}/erase", data={"csrf": csrf}).status_code == 200
    [request] = _mails_to(clean, carl.email, 1)
    assert parse(request)["Subject"].startswith("Please confirm: erase me")
    link = _confirm_link(request)
    confirm_csrf = _open(client, link)
    assert subscriber(carl.email) is not None  # asked and opened: not yet erased

    # The signature is over the action too: the export's link cannot be made an erasure's.
    forged = link.replace(".erase.", ".export.")
    assert client.post(path(forged), data={"csrf": confirm_csrf}).status_code == 404
    assert subscriber(carl.email) is not None

    answer = client.post(path(link), data={"csrf": confirm_csrf})
    assert answer.status_code == 200 and "You are erased" in answer.text
    assert subscriber(carl.email) is None
    hash_ = address_hash(carl.email_key)
    with transaction() as session:
        kept = session.scalars(select(Suppression).where(Suppression.address_hash == hash_)).one()
        assert kept.reason == "erased"
        trace = session.scalars(select(ConsentEvent).where(
            ConsentEvent.address_hash == hash_)).all()
        assert [(e.kind, e.subscriber_id) for e in trace] == [("erased", None)]
    # Both links now lead nowhere.
    assert client.get(path(url)).status_code == 404
    assert client.post(path(link), data={"csrf": confirm_csrf}).status_code == 404


def test_every_digest_links_its_reader_s_preference_page(clean, web, worker) -> None:
    readers = make_subscribers(3)
    edition_id = make_edition()
    assert start(edition_id) == 3
    wait_sent(edition_id)
    base = get_settings().base_url
    client = _client(web)
    for address in readers:
        sub = subscriber(address)
        assert sub is not None
        [mail] = clean.smtp.to(address)
        text, html = parts(parse(mail))
        url = preferences_url_for(sub.public_id, base_url=base, keys=stack_keys())
        assert url in links(text) and f'href="{url}"' in html
        assert address in client.get(path(url)).text


@pytest.mark.parametrize("status", ["pending", "unsubscribed"])
def test_the_page_works_for_a_reader_who_is_not_subscribed(clean, web, status: str) -> None:
    sub = make(f"{status}.prefs@example.org", status)
    url = preferences_url(sub, base_url=get_settings().base_url, keys=stack_keys())
    answer = _client(web).get(path(url))
    assert answer.status_code == 200
    assert ("Unsubscribe" in answer.text) == (status == "pending")
    assert "Download my data" in answer.text and "Erase me" in answer.text


# --- lists and topics -----------------------------------------------------------------------


def _lists_and_topics() -> tuple[int, int, int, dict[str, int]]:
    """The first list (the reader's), a public and a private one; the first list's topics
    made from four articles' categories: {label: topic id}."""
    make_articles(4)  # News, CEP Events, Criminal Justice, Mental Health
    with transaction() as s:
        first = lists.default_list(s)
        events_list = lists.create(s, slug="events", name="Event announcements",
                                   list_id="events.example.org", description="Our events.")
        private = lists.create(s, slug="experts", name="Expert group",
                               list_id="experts.example.org", public=False)
        topics.sync(s, first.id)
        found = {v.label: v.id for v in topics.catalogue(s, first.id)}
        return first.id, events_list.id, private.id, found


def _subscription(subscriber_id: int, list_id: int) -> Subscription | None:
    with transaction() as s:
        return lists.subscription(s, subscriber_id, list_id)


def _list_events(subscriber_id: int, kind: str) -> list[dict[str, object]]:
    return [e for e in event_rows(subscriber_id) if e["kind"] == kind]


def test_topics_changed_on_the_page_reach_the_subscription_as_consent_events(clean, web) -> None:
    first, _, _, found = _lists_and_topics()
    assert set(found) == {"News", "CEP Events", "Criminal Justice", "Mental Health"}
    rut = make("rut.prefs@example.org", "confirmed")
    url = preferences_url(rut, base_url=get_settings().base_url, keys=stack_keys())
    client = _client(web)
    csrf = _open(client, url)
    page_text = client.get(path(url)).text
    for label, topic_id in found.items():  # all ticked: follows everything
        assert re.search(rf'name="topic-{topic_id}" value="yes"\s+checked>\s*{label}', page_text)

    chosen = [found["Mental Health"], found["CEP Events"]]
    answer = client.post(f"{path(url)}/topics", data={
        "csrf": csrf, "list": str(first), **{f"topic-{i}": "yes" for i in chosen}})
    assert answer.status_code == 200 and "Your topics for" in answer.text
    held = _subscription(rut.id, first)
    assert held is not None and sorted(held.topics or []) == sorted(chosen)
    [changed] = _list_events(rut.id, "topics_changed")
    assert (changed["list_id"], changed["channel"], changed["user_agent"]) == (
        first, "preferences", "prefs-test/1.0")
    assert changed["detail"]["before"] is None  # type: ignore[index]
    assert sorted(changed["detail"]["after"]) == sorted(chosen)  # type: ignore[index]
    assert not re.search(rf'name="topic-{found["News"]}" value="yes"\s+checked', answer.text)
    with transaction() as s:
        assert topics.categories_for(s, first, held.topics) == {"Mental Health", "CEP Events"}

    # The same again: nothing recorded. No box ticked: refused beside the list.
    client.post(f"{path(url)}/topics", data={
        "csrf": csrf, "list": str(first), **{f"topic-{i}": "yes" for i in chosen}})
    answer = client.post(f"{path(url)}/topics", data={"csrf": csrf, "list": str(first)})
    assert answer.status_code == 422 and "at least one topic" in answer.text
    for bad in ({"list": "x"}, {"list": str(first), "topic-999999": "yes"}):
        assert client.post(f"{path(url)}/topics", data={"csrf": csrf, **bad}
                           ).status_code == 422
    assert len(_list_events(rut.id, "topics_changed")) == 1

    # Every box ticked: all of them again (NULL), the topics of tomorrow included.
    answer = client.post(f"{path(url)}/topics", data={
        "csrf": csrf, "list": str(first), **{f"topic-{i}": "yes" for i in found.values()}})
    assert answer.status_code == 200
    held = _subscription(rut.id, first)
    assert held is not None and held.topics is None
    assert [e["detail"]["after"] is None  # type: ignore[index]
            for e in _list_events(rut.id, "topics_changed")] == [False, True]


def test_the_reader_joins_a_public_list_and_leaves_one_or_everything(clean, web, worker) -> None:
    first, events_id, private_id, _ = _lists_and_topics()
    ola = make("ola.prefs@example.org", "confirmed")
    url = preferences_url(ola, base_url=get_settings().base_url, keys=stack_keys())
    client = _client(web)
    csrf = _open(client, url)
    page_text = client.get(path(url)).text
    assert "Event announcements" in page_text and "Join Event announcements" in page_text
    assert "Expert group" not in page_text  # private: staff and import only

    # A private list is not joined from here; nothing changes.
    answer = client.post(f"{path(url)}/join", data={"csrf": csrf, "list": str(private_id)})
    assert answer.status_code == 422
    assert _subscription(ola.id, private_id) is None

    answer = client.post(f"{path(url)}/join", data={"csrf": csrf, "list": str(events_id)})
    assert answer.status_code == 200 and "we mail a link" in answer.text
    held = _subscription(ola.id, events_id)
    assert held is not None and held.status == "pending"
    [subscribed] = [e for e in _list_events(ola.id, "subscribed") if e["list_id"] == events_id]
    assert subscribed["source"] == "preferences"
    [mail] = _mails_to(clean, ola.email, 1)
    text, _ = parts(parse(mail))
    [confirm_link] = [u for u in links(text) if "/confirm/" in u]
    first_held = _subscription(ola.id, first)
    assert first_held is not None and first_held.status == "confirmed"

    # Leave one list: that one ends, the other stays.
    answer = client.post(f"{path(url)}/leave", data={"csrf": csrf, "list": str(first)})
    assert answer.status_code == 200 and "You have left" in answer.text
    left = _subscription(ola.id, first)
    assert left is not None and left.status == "unsubscribed"
    still = _subscription(ola.id, events_id)
    assert still is not None and still.status == "pending"
    assert [(e["list_id"], e["channel"]) for e in _list_events(ola.id, "unsubscribed")] == [
        (first, "preferences")]
    assert confirm_link  # the events list's link is in the inbox

    # Leave everything: the rest ends, each list its own event; a repeat records nothing.
    for _ in range(2):
        answer = client.post(f"{path(url)}/leave", data={"csrf": csrf})
        assert answer.status_code == 200 and "You are not subscribed" in answer.text
    ended = _subscription(ola.id, events_id)
    assert ended is not None and ended.status == "unsubscribed"
    assert sorted(e["list_id"] for e in _list_events(ola.id, "unsubscribed")) == sorted(
        [first, events_id])
    assert client.post(f"{path(url)}/leave", data={"csrf": csrf, "list": "0"}
                       ).status_code == 422
