"""The reader's whole journey over HTTP, with a real worker sending real mail."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from mailer.db import transaction
from mailer.subscribers.models import ConsentEvent, Subscriber
from tests.conftest import wait_for
from tests.support.mail import links, parse, parts


def _subscriber(email_key: str) -> Subscriber | None:
    with transaction() as s:
        return s.scalars(select(Subscriber).where(Subscriber.email_key == email_key)).first()


def _events(subscriber_id: int) -> list[str]:
    with transaction() as s:
        return list(s.scalars(select(ConsentEvent.kind).where(
            ConsentEvent.subscriber_id == subscriber_id).order_by(ConsentEvent.id)))


def test_subscribe_confirm_then_one_click_unsubscribe(clean, web, worker) -> None:
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    answer = client.post("/subscribe", data={
        "email": "Anna.Schmidt@Example.ORG", "first_name": "Anna", "last_name": "Schmidt",
        "organisation": "Bewährungshilfe", "country": "Germany", "consent": "yes",
    }, headers={"User-Agent": "test-browser/1.0"})
    assert answer.status_code == 200
    assert "check your inbox" in answer.text

    sub = _subscriber("anna.schmidt@example.org")
    assert sub is not None and sub.status == "pending"
    assert sub.email == "Anna.Schmidt@example.org"  # domain normalised, local part kept

    [mail] = wait_for(lambda: clean.smtp.to("anna.schmidt@example.org"), what="confirmation mail")
    msg = parse(mail)
    assert mail.mail_from.startswith("bounces+c") and "@" in mail.mail_from
    assert msg["List-Unsubscribe-Post"] is None  # a confirmation is not a newsletter
    assert msg["Message-ID"].startswith("<confirm.")
    text, html = parts(msg)
    confirm_links = [u for u in links(text) if "/confirm/" in u]
    assert len(confirm_links) == 1
    assert confirm_links[0] in html

    # Following the link (as a link scanner would) shows a page and confirms nobody.
    page = client.get(confirm_links[0].replace(web.url, ""))
    assert page.status_code == 200 and "<form method=\"post\"" in page.text
    assert _subscriber("anna.schmidt@example.org").status == "pending"

    done = client.post(confirm_links[0].replace(web.url, ""))
    assert done.status_code == 200
    sub = _subscriber("anna.schmidt@example.org")
    assert sub.status == "confirmed" and sub.confirmed_at is not None

    # The link works once.
    again = client.post(confirm_links[0].replace(web.url, ""))
    assert again.status_code == 410 and "already been used" in again.text

    # RFC 8058 one-click: no cookies, form-encoded body, 2xx, no redirect.
    unsubscribe_url = [u for u in links(done.text) if "/unsubscribe/" in u][0]
    fresh = httpx.Client(follow_redirects=False)
    one_click = fresh.post(unsubscribe_url, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and "location" not in one_click.headers
    assert _subscriber("anna.schmidt@example.org").status == "unsubscribed"
    repeat = fresh.post(unsubscribe_url, data={"List-Unsubscribe": "One-Click"})
    assert repeat.status_code == 200

    assert _events(sub.id) == ["subscribed", "confirmation_sent", "confirmed", "unsubscribed"]
    with transaction() as s:
        confirmed = s.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == sub.id, ConsentEvent.kind == "confirmed")).one()
        sent = s.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == sub.id, ConsentEvent.kind == "confirmation_sent")).one()
        unsub = s.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == sub.id, ConsentEvent.kind == "unsubscribed")).one()
    assert confirmed.ip == "127.0.0.1"
    assert sent.message_id == msg["Message-ID"]
    assert unsub.channel == "one-click"
