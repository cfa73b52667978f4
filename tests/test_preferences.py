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
from mailer.subscribers.models import ConsentEvent, Suppression
from mailer.subscribers.unsubscribe import (
    preferences_url,
    preferences_url_for,
    unsubscribe_url,
)
from mailer.tokens import address_hash, random_id
from tests.conftest import wait_for
from tests.support.factories import make_edition, make_subscribers, stack_keys, start, wait_sent
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
        for action in ("name", "leave", "export", "erase"):
            answer = client.post(f"/preferences/{bad}/{action}",
                                 data={"csrf": csrf, "first_name": "Mallory"})
            assert answer.status_code == 404, (bad, action)
        for confirm in (f"{bad}", f"{public_id}.export.1800000000.{signature}"):
            assert client.get(f"/preferences/confirm/{confirm}").status_code == 404
            assert client.post(f"/preferences/confirm/{confirm}",
                               data={"csrf": csrf}).status_code == 404
    # The real link without the page's CSRF token (another site posting the form): 403.
    for action in ("name", "leave", "export", "erase"):
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
