"""The reader's whole journey over HTTP, with a real worker sending real mail."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from html import unescape

import httpx
from sqlalchemy import select

from mailer.db import transaction
from mailer.emails.verp import parse_return_path
from mailer.lists import service as lists
from mailer.lists.models import Subscription
from mailer.redis import get_redis
from mailer.subscribers.models import ConsentEvent, Subscriber
from tests.conftest import wait_for
from tests.support.factories import FIRST_LIST, stack_keys
from tests.support.mail import links, parse, parts
from tests.support.subscribers import (
    confirmation_link,
    event_rows,
    events,
    list_status,
    move_back,
    path,
    settle_confirmation_tasks,  # noqa: F401
    subscriber,
    tokens,
)

FORM = {"first_name": "Anna", "last_name": "Schmidt", "organisation": "Bewährungshilfe",
        "country": "Germany", "consent": "yes"}


def held(sub: Subscriber) -> Subscription:
    """The reader's subscription to the first list."""
    with transaction() as session:
        found = lists.subscription(session, sub.id, FIRST_LIST)
        assert found is not None
        return found


def _sign_up(client: httpx.Client, address: str, **extra: str) -> httpx.Response:
    return client.post("/subscribe", data={**FORM, "email": address, **extra},
                       headers={"User-Agent": "test-browser/1.0"})


def test_subscribe_confirm_then_one_click_unsubscribe(clean, web, worker) -> None:
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    answer = _sign_up(client, "Anna.Schmidt@Example.ORG")
    assert answer.status_code == 200
    assert "check your inbox" in answer.text

    sub = subscriber("anna.schmidt@example.org")
    assert sub is not None and list_status(sub.email) == "pending"
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
    page = client.get(path(confirm_links[0]))
    assert page.status_code == 200 and "<form method=\"post\"" in page.text
    assert list_status("anna.schmidt@example.org") == "pending"

    done = client.post(path(confirm_links[0]), headers={"User-Agent": "confirming-browser/2"})
    assert done.status_code == 200
    sub = subscriber("anna.schmidt@example.org")
    assert list_status(sub.email) == "confirmed" and held(sub).confirmed_at is not None

    # The link works once.
    again = client.post(path(confirm_links[0]))
    assert again.status_code == 410 and "already been used" in again.text
    assert 'href="/subscribe"' in again.text  # and offers to subscribe again

    # RFC 8058 one-click: no cookies, form-encoded body, 2xx, no redirect.
    unsubscribe_url = [u for u in links(done.text) if "/unsubscribe/" in u][0]
    fresh = httpx.Client(follow_redirects=False)
    one_click = fresh.post(unsubscribe_url, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and "location" not in one_click.headers
    assert "set-cookie" not in one_click.headers
    assert list_status("anna.schmidt@example.org") == "unsubscribed"
    repeat = fresh.post(unsubscribe_url, data={"List-Unsubscribe": "One-Click"})
    assert repeat.status_code == 200

    assert events(sub.id) == ["subscribed", "confirmation_sent", "confirmed", "unsubscribed"]
    with transaction() as s:
        by_kind = {e.kind: e for e in s.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == sub.id))}
    signed_up, sent = by_kind["subscribed"], by_kind["confirmation_sent"]
    confirmed, unsub = by_kind["confirmed"], by_kind["unsubscribed"]
    assert signed_up.ip == "127.0.0.1" and signed_up.user_agent == "test-browser/1.0"
    assert signed_up.source == "subscribe-page" and signed_up.consent_version
    assert signed_up.consent_text and "unsubscribe" in signed_up.consent_text
    assert confirmed.ip == "127.0.0.1" and confirmed.user_agent == "confirming-browser/2"
    assert sent.message_id == msg["Message-ID"]
    assert unsub.channel == "one-click"


def test_the_confirmation_mail_meets_the_message_standards(clean, web, worker) -> None:
    client = httpx.Client(base_url=web.url)
    # A name that tries to look like a header (a line break in it is refused at the form,
    # tests/test_inputs.py).
    answer = _sign_up(client, "Otto@example.net", first_name="Otto Bcc: victim@example.com",
                      last_name="Ölberg")
    assert answer.status_code == 200
    [mail] = wait_for(lambda: clean.smtp.to("Otto@example.net"), what="confirmation mail")
    raw = mail.data
    assert mail.rcpt_tos == ["Otto@example.net"]  # one recipient per transaction

    # CRLF everywhere, no line over 998 octets.
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998

    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    names = [line.split(":", 1)[0].lower() for line in head.split("\r\n")
             if line and not line[0].isspace()]
    for header in ("from", "to", "subject", "date", "message-id"):
        assert names.count(header) == 1, header
    assert "bcc" not in names and "list-unsubscribe-post" not in names
    assert "list-unsubscribe" not in names  # nobody is subscribed yet

    msg = parse(mail)
    assert [a.addr_spec for a in msg["To"].addresses] == ["Otto@example.net"]
    assert "victim" not in head and "Otto Bcc" not in head  # the name stays out of headers
    assert len(msg["From"].addresses) == 1
    assert re.search(r"[+-]\d{4}$", msg["Date"])  # a numeric zone
    assert email.utils.parsedate_to_datetime(msg["Date"]).utcoffset() is not None
    assert re.fullmatch(r"<[^@<>\s]+@cep-probation\.example\.org>", msg["Message-ID"])

    # multipart/alternative: text/plain first, text/html last, the same links in both,
    # the postal address in both; no advertising (no link but the confirmation and the
    # association's own site).
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text, html = parts(msg)
    hrefs = {unescape(u) for u in re.findall(r'href="([^"]+)"', html)}
    assert set(links(text)) == hrefs
    confirm = [u for u in links(text) if "/confirm/" in u]
    assert len(confirm) == 1 and set(links(text)) <= {confirm[0], "https://www.cep-probation.org"}
    assert "Postbus 8284" in text and "Postbus 8284" in html
    assert "Hello Otto Bcc: victim@example.com," in text  # in the text, never in a header

    # The envelope sender is a signed VERP address naming the confirmation, not the reader.
    assert mail.mail_from.startswith("bounces+c") and "otto" not in mail.mail_from.lower()
    local = mail.mail_from.split("@")[0]
    assert len(local.encode()) <= 64
    token = parse_return_path(mail.mail_from, keys=stack_keys())
    assert token and token.kind == "confirmation"
    assert token.id == tokens(subscriber("otto@example.net").id)[0].id
    # The signature's last two characters changed, nothing else (a replace over the whole
    # address could hit "bounces" or the domain and make it no token at all).
    forged = (local[:-2] + ("aa" if local[-2:] != "aa" else "bb") + "@"
              + mail.mail_from.split("@", 1)[1])
    assert parse_return_path(forged, keys=stack_keys()) is False


def test_unsubscribe_page_button_and_multipart_one_click(clean, web, worker) -> None:
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    _sign_up(client, "petra@example.org")
    link = confirmation_link(clean.smtp, "petra@example.org")
    done = client.post(path(link))
    unsubscribe_url = [u for u in links(done.text) if "/unsubscribe/" in u][0]
    sub = subscriber("petra@example.org")
    assert list_status(sub.email) == "confirmed"

    # GET never changes state: it shows a page with a button.
    shown = httpx.get(unsubscribe_url)
    assert shown.status_code == 200
    assert f'action="{path(unsubscribe_url)}"' in shown.text and "<button" in shown.text
    assert list_status("petra@example.org") == "confirmed"

    # One-click as multipart/form-data (some mail providers send it so), no cookies.
    one_click = httpx.post(unsubscribe_url, files={"List-Unsubscribe": (None, "One-Click")})
    assert one_click.request.headers["content-type"].startswith("multipart/form-data")
    assert one_click.status_code == 200 and "location" not in one_click.headers
    assert list_status("petra@example.org") == "unsubscribed"

    # Repeats, by either channel, answer 2xx and change nothing.
    before = event_rows(sub.id)
    assert httpx.post(unsubscribe_url, files={"List-Unsubscribe": (None, "One-Click")}
                      ).status_code == 200
    page = httpx.post(unsubscribe_url)
    assert page.status_code == 200 and "You are unsubscribed" in page.text
    assert event_rows(sub.id) == before
    with transaction() as s:
        [unsub] = s.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == sub.id, ConsentEvent.kind == "unsubscribed")).all()
    assert unsub.channel == "one-click"

    # After it, the page says so and offers to subscribe again.
    after = httpx.get(unsubscribe_url)
    assert "You are unsubscribed" in after.text and 'href="/subscribe"' in after.text


def test_unsubscribe_button_on_the_page(clean, web, worker) -> None:
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    _sign_up(client, "jan@example.org")
    done = client.post(path(confirmation_link(clean.smtp, "jan@example.org")))
    unsubscribe_url = [u for u in links(done.text) if "/unsubscribe/" in u][0]
    pressed = client.post(path(unsubscribe_url), headers={"User-Agent": "phone/1"})
    assert pressed.status_code == 200 and "You are unsubscribed" in pressed.text
    sub = subscriber("jan@example.org")
    assert list_status(sub.email) == "unsubscribed" and held(sub).unsubscribed_at is not None
    with transaction() as s:
        unsub = s.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == sub.id, ConsentEvent.kind == "unsubscribed")).one()
    assert unsub.channel == "link" and unsub.user_agent == "phone/1"


def test_resubscribe_after_unsubscribe_takes_a_fresh_double_opt_in(clean, web, worker) -> None:
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    _sign_up(client, "maria@example.org")
    first_link = confirmation_link(clean.smtp, "maria@example.org")
    done = client.post(path(first_link))
    unsubscribe_url = [u for u in links(done.text) if "/unsubscribe/" in u][0]
    httpx.post(unsubscribe_url, data={"List-Unsubscribe": "One-Click"})
    sub = subscriber("maria@example.org")
    assert list_status(sub.email) == "unsubscribed"
    history = event_rows(sub.id)

    # Within the day, the address has had its confirmation mail: the answer is the usual
    # one (it must not tell that this address signed up today), but no mail goes out: the
    # link is made and its mail held for a day.
    from tests.support.subscribers import TaskLog

    log = TaskLog(worker)
    limited = _sign_up(client, "maria@example.org")
    assert limited.status_code == 200 and "check your inbox" in limited.text
    assert list_status("maria@example.org") == "pending"
    assert log.wait_outcomes(1) == ["nothing"]
    assert len(clean.smtp.to("maria@example.org")) == 1

    # A day later (timestamps moved back, the Redis window run out) she comes back.
    move_back(sub.id, dt.timedelta(days=1, minutes=5))
    for key in get_redis().scan_iter("mailer:rl:signup-address:*"):
        get_redis().delete(key)
    again = _sign_up(client, "MARIA@example.org", first_name="Maria")
    assert again.status_code == 200
    sub = subscriber("maria@example.org")
    assert list_status(sub.email) == "pending"  # not confirmed by signing up: a fresh double opt-in
    second_link = confirmation_link(clean.smtp, "maria@example.org", count=2)
    assert second_link != first_link
    assert client.post(path(first_link)).status_code == 410  # the old link stays dead
    assert client.post(path(second_link)).status_code == 200
    sub = subscriber("maria@example.org")
    assert list_status(sub.email) == "confirmed" and held(sub).unsubscribed_at is None

    assert events(sub.id) == [
        "subscribed", "confirmation_sent", "confirmed", "unsubscribed",
        "resubscribed", "subscribed", "confirmation_sent", "confirmed",
    ]
    # Append-only: the first four events are exactly as they were.
    assert event_rows(sub.id)[:4] == history


def test_signing_up_again_keeps_the_link_already_in_the_inbox(clean, web, worker) -> None:
    """A second press of the form (got past the rate limit, e.g. with a higher setting)
    must not kill the link the reader has just been sent, nor send a second mail."""
    from tests.support.subscribers import TaskLog

    client = httpx.Client(base_url=web.url, follow_redirects=False)
    _sign_up(client, "lena@example.org")
    link = confirmation_link(clean.smtp, "lena@example.org")
    for key in get_redis().scan_iter("mailer:rl:signup-address:*"):
        get_redis().delete(key)
    log = TaskLog(worker)
    assert _sign_up(client, "lena@example.org").status_code == 200
    assert log.wait_outcomes(1) == ["nothing"]
    assert len(clean.smtp.to("lena@example.org")) == 1
    assert len(tokens(subscriber("lena@example.org").id)) == 1
    assert client.post(path(link)).status_code == 200
    assert list_status("lena@example.org") == "confirmed"
