"""What an outsider can and cannot do with the public pages: learn who is subscribed,
forge or reuse links, flood the form, inject headers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from mailer.config import get_settings
from mailer.db import transaction
from mailer.redis import get_redis
from mailer.subscribers.models import ConfirmationToken, ConsentEvent, Subscriber
from mailer.subscribers.unsubscribe import unsubscribe_token, unsubscribe_url
from tests.support.factories import stack_keys
from tests.support.processes import WebServer, free_port
from tests.support.subscribers import (
    TaskLog,
    confirmation_link,
    event_rows,
    list_status,
    make,
    move_back,
    path,
    settle_confirmation_tasks,  # noqa: F401
    subscriber,
    tokens,
)

CONSENT = {"consent": "yes"}


def _counts() -> tuple[int, int, int]:
    with transaction() as s:
        return (s.scalar(select(func.count()).select_from(Subscriber)),
                s.scalar(select(func.count()).select_from(ConsentEvent)),
                s.scalar(select(func.count()).select_from(ConfirmationToken)))


# --- enumeration ---------------------------------------------------------------------------


def test_the_answer_is_the_same_for_every_kind_of_address(clean, web, worker) -> None:
    """New, pending, confirmed and unsubscribed: the same status, the same bytes, the same
    headers; the same work behind it (one task queued each); mail only where it belongs."""
    make("pending@example.org", "pending")
    make("confirmed@example.org", "confirmed")
    make("unsubscribed@example.org", "unsubscribed")
    kinds = ["new@example.org", "pending@example.org", "confirmed@example.org",
             "unsubscribed@example.org"]
    log = TaskLog(worker)
    client = httpx.Client(base_url=web.url)
    answers = [client.post("/subscribe", data={"email": a, **CONSENT, "first_name": "X"})
               for a in kinds]

    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1, "the bodies differ"
    headers = [{k: v for k, v in a.headers.items() if k != "date"} for a in answers]
    assert all(h == headers[0] for h in headers)
    assert "check your inbox" in answers[0].text

    # Structurally the same: every sign-up queued exactly one confirmation task ...
    outcomes = log.wait_outcomes(4)
    assert log.received() == 4
    # ... and only the confirmed address got no mail.
    assert sorted(outcomes) == ["nothing", "sent", "sent", "sent"]
    for address in ("new@example.org", "pending@example.org", "unsubscribed@example.org"):
        assert len(clean.smtp.to(address)) == 1
    assert clean.smtp.to("confirmed@example.org") == []
    assert list_status("confirmed@example.org") == "confirmed"
    assert list_status("unsubscribed@example.org") == "pending"


def test_honeypot_is_dropped_silently(clean, web) -> None:
    client = httpx.Client(base_url=web.url)
    bot = client.post("/subscribe", data={"email": "bot@example.org", **CONSENT,
                                          "website": "http://spam.example"})
    assert _counts() == (0, 0, 0)
    assert list(get_redis().scan_iter("mailer:rl:*")) == []  # not even counted
    # The bot sees what a person sees.
    normal = client.post("/subscribe", data={"email": "bot@example.org", **CONSENT})
    assert bot.status_code == normal.status_code == 200
    assert bot.content == normal.content


# --- confirmation tokens -------------------------------------------------------------------


def _pending_link(clean, web, address: str) -> str:
    httpx.post(f"{web.url}/subscribe", data={"email": address, **CONSENT})
    return confirmation_link(clean.smtp, address)


def test_forged_confirmation_links_confirm_nobody(clean, web, worker) -> None:
    link = _pending_link(clean, web, "eva@example.org")
    token_id, signature = path(link).rsplit("/", 1)[1].split(".")
    other = unsubscribe_token(subscriber("eva@example.org"), keys=stack_keys())
    forged = [
        f"{token_id}.{'A' * 43}",  # right length, wrong signature
        f"{token_id}.{signature[:16]}",  # a prefix of the right signature
        f"{token_id}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        f"{int(token_id) + 1}.{signature}",  # the signature of another token
        other,  # an unsubscribe token is no confirmation token
        f"²{token_id}.{signature}", "٣.x", "1" * 40 + ".x", "", ".", "x.y.z",
        "%00", "..%2f..%2fetc%2fpasswd",
    ]
    client = httpx.Client(base_url=web.url)
    for value in forged:
        for answer in (client.get(f"/confirm/{value}"), client.post(f"/confirm/{value}")):
            assert 400 <= answer.status_code < 500, (value, answer.status_code)
    assert list_status("eva@example.org") == "pending"
    assert events(subscriber("eva@example.org").id) == ["subscribed", "confirmation_sent"]
    # The real one still works.
    assert client.post(path(link)).status_code == 200


def events(subscriber_id: int) -> list[str]:
    from tests.support.subscribers import events as kinds

    return kinds(subscriber_id)


def test_an_expired_link_gets_a_clear_page_and_confirms_nobody(clean, web, worker) -> None:
    link = _pending_link(clean, web, "old@example.org")
    sub = subscriber("old@example.org")
    # Seven days and a minute later (moved in the database).
    move_back(sub.id, dt.timedelta(days=7, minutes=1))
    client = httpx.Client(base_url=web.url)
    for answer in (client.get(path(link)), client.post(path(link))):
        assert answer.status_code == 410
        assert "expired" in answer.text and 'href="/subscribe"' in answer.text
    assert list_status("old@example.org") == "pending"

    # Six days and 23 hours is still inside the week.
    link2 = _pending_link(clean, web, "fresh@example.org")
    move_back(subscriber("fresh@example.org").id, dt.timedelta(days=6, hours=23))
    assert client.post(path(link2)).status_code == 200


def test_tokens_expire_after_at_most_seven_days_and_carry_enough_bits(clean, web, worker) -> None:
    link = _pending_link(clean, web, "bits@example.org")
    [token] = tokens(subscriber("bits@example.org").id)
    assert token.expires_at - token.created_at <= dt.timedelta(days=7)
    signature = path(link).rsplit(".", 1)[1]
    assert len(signature) * 6 >= 128  # base64: six bits a character
    assert len(bytes.fromhex(token.nonce)) * 8 >= 128


def test_a_used_or_superseded_link_does_not_work_again(clean, web, worker) -> None:
    client = httpx.Client(base_url=web.url)
    link = _pending_link(clean, web, "twice@example.org")
    assert client.post(path(link)).status_code == 200
    for answer in (client.get(path(link)), client.post(path(link))):
        assert answer.status_code == 410 and "already been used" in answer.text
    sub = subscriber("twice@example.org")
    assert events(sub.id).count("confirmed") == 1

    # A link replaced by a newer one (a sign-up a day later) is dead too.
    old = _pending_link(clean, web, "newer@example.org")
    sub = subscriber("newer@example.org")
    move_back(sub.id, dt.timedelta(days=1, minutes=1))
    get_redis().flushdb()
    client.post("/subscribe", data={"email": "newer@example.org", **CONSENT})
    new = confirmation_link(clean.smtp, "newer@example.org", count=2)
    assert new != old
    assert client.post(path(old)).status_code == 410
    assert list_status("newer@example.org") == "pending"
    assert client.post(path(new)).status_code == 200


def test_two_confirm_presses_at_once_confirm_once(clean, web, worker) -> None:
    import concurrent.futures

    link = _pending_link(clean, web, "race@example.org")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: httpx.post(link).status_code, range(4)))
    assert codes == [200, 410, 410, 410]
    assert events(subscriber("race@example.org").id).count("confirmed") == 1


# --- unsubscribe tokens -----------------------------------------------------------------------


def test_forged_unsubscribe_links_change_nothing(clean, web) -> None:
    anna = make("anna@example.org", "confirmed")
    bert = make("bert@example.org", "confirmed")
    good = unsubscribe_token(anna, keys=stack_keys())
    public_id, signature = good.split(".")
    forged = [
        f"{public_id}.{'A' * len(signature)}",
        f"{public_id}.{signature[:16]}",  # a prefix of the right signature
        f"{bert.public_id}.{signature}",  # Anna's signature on Bert's id
        f"{public_id}.",
        public_id,
        "x" * 32 + "." + signature,
        "",
    ]
    before = (event_rows(anna.id), event_rows(bert.id))
    for value in forged:
        url = f"{web.url}/unsubscribe/{value}"
        for answer in (
            httpx.get(url),
            httpx.post(url),
            httpx.post(url, data={"List-Unsubscribe": "One-Click"}),
            httpx.post(url, files={"List-Unsubscribe": (None, "One-Click")}),
        ):
            assert 400 <= answer.status_code < 500, (value, answer.status_code)
    assert list_status("anna@example.org") == "confirmed"
    assert list_status("bert@example.org") == "confirmed"
    assert (event_rows(anna.id), event_rows(bert.id)) == before


def test_unsubscribe_links_do_not_expire(clean, web) -> None:
    reader = make("loyal@example.org", "confirmed")
    move_back(reader.id, dt.timedelta(days=3650))
    url = unsubscribe_url(reader, base_url=get_settings().base_url, keys=stack_keys())
    assert httpx.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert list_status("loyal@example.org") == "unsubscribed"


def test_a_pending_reader_can_unsubscribe_and_their_link_dies(clean, web, worker) -> None:
    link = _pending_link(clean, web, "undecided@example.org")
    sub = subscriber("undecided@example.org")
    answer = httpx.post(unsubscribe_url(sub, base_url=get_settings().base_url, keys=stack_keys()),
                        data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert httpx.post(link).status_code == 410
    assert list_status("undecided@example.org") == "unsubscribed"


# --- rate limits ---------------------------------------------------------------------------


# The per-address limit answers as a first sign-up does: tests/test_inputs.py.


@pytest.fixture
def strict_web(clean) -> Iterator[WebServer]:
    """A second web server whose per-IP limit is three sign-ups an hour (the session's
    server allows a million, so that the other tests are not limited)."""
    env = {**clean.env, "MAILER_SIGNUP_LIMIT_PER_IP_PER_HOUR": "3"}
    server = WebServer(env, clean.tmp / "strict-web.log", free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def test_per_ip_limit_answers_429_with_a_friendly_page(strict_web) -> None:
    def sign_up(address: str, ip: str) -> httpx.Response:
        # uvicorn takes the client address from X-Forwarded-For when the peer is loopback,
        # as it is behind the reverse proxy in production.
        return httpx.post(f"{strict_web.url}/subscribe", data={"email": address, **CONSENT},
                          headers={"X-Forwarded-For": ip})

    answers = [sign_up(f"r{i}@example.org", "198.51.100.1") for i in range(5)]
    other = sign_up("other@example.org", "198.51.100.2")  # another visitor
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert other.status_code == 200
    assert "Please try again later" in answers[3].text
    assert answers[3].headers["content-type"].startswith("text/html")
    assert subscriber("r3@example.org") is None and subscriber("r4@example.org") is None
    assert subscriber("r2@example.org") is not None
    assert subscriber("other@example.org") is not None


# --- header injection and malformed input ---------------------------------------------------------


# Line breaks and control characters in names are refused beside the field:
# tests/test_inputs.py.


@pytest.mark.parametrize("address", [
    "eve@example.org\r\nBcc: victim@example.com", "eve@example.org\nBcc: x@y.org",
    "eve@example.org, victim@example.com", "Eve <eve@example.org>", "eve@[127.0.0.1]",
    '"eve"@example.org', "eve@localhost", "not-an-address", "", "müller@example.de",
    "eve@example.org\x00", "a" * 400 + "@example.org",
])
def test_malformed_addresses_are_refused_beside_the_field(clean, web, address: str) -> None:
    before = _counts()
    answer = httpx.post(f"{web.url}/subscribe", data={"email": address, **CONSENT})
    assert answer.status_code == 422
    assert 'id="email-error"' in answer.text and 'aria-invalid="true"' in answer.text
    assert _counts() == before


def test_consent_is_required(clean, web) -> None:
    answer = httpx.post(f"{web.url}/subscribe", data={"email": "nocheck@example.org",
                                                      "first_name": "Kai"})
    assert answer.status_code == 422 and 'id="consent-error"' in answer.text
    assert 'value="Kai"' in answer.text and 'value="nocheck@example.org"' in answer.text
    assert subscriber("nocheck@example.org") is None


@pytest.mark.parametrize("content_type,body", [
    ("application/json", b'{"email": "json@example.org", "consent": "yes"}'),
    ("multipart/form-data", b"--x\r\nbroken"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nv"),
    ("multipart/form-data; boundary=x",
     b'--x\r\nContent-Disposition: form-data; name="email"; filename="a.txt"\r\n\r\n'
     b"file@example.org\r\n--x--\r\n"),
    ("application/x-www-form-urlencoded", b"email=%ZZ&consent=%"),
    ("application/x-www-form-urlencoded", b"email=" + b"a" * 70000),
    ("text/plain", b"\xff\xfe\x00garbage"),
    ("", b""),
])
def test_garbage_bodies_get_a_4xx_page_and_change_nothing(clean, web, content_type: str,
                                                           body: bytes) -> None:
    before = _counts()
    headers = {"content-type": content_type} if content_type else {}
    answer = httpx.post(f"{web.url}/subscribe", content=body, headers=headers)
    assert 400 <= answer.status_code < 500
    assert answer.headers["content-type"].startswith("text/html")
    assert _counts() == before


def test_pages_forbid_framing_and_leak_no_token_in_referers(web) -> None:
    answer = httpx.get(f"{web.url}/subscribe")
    assert answer.status_code == 200
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"


def test_a_forwarded_address_of_any_length_is_stored_bounded(clean, web) -> None:
    answer = httpx.post(f"{web.url}/subscribe", data={"email": "proxied@example.org", **CONSENT},
                        headers={"X-Forwarded-For": "x" * 500})
    assert answer.status_code == 200
    with transaction() as s:
        event = s.scalars(select(ConsentEvent).where(ConsentEvent.kind == "subscribed")).one()
    assert event.ip == "x" * 64
