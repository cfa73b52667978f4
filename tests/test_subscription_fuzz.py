"""A thousand random, partial and garbage requests against the public endpoints.

Whatever comes in: never a 5xx, never a traceback in the server's log, and the database
holds nothing it should not — no subscriber without a valid normalised address, no name
with a line break, nobody confirmed or unsubscribed by a request that could not know a
real token, and the two readers who were there before exactly as they were.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mailer.db import transaction
from mailer.subscribers.addresses import normalise
from mailer.subscribers.confirmation import confirmation_token_value
from mailer.subscribers.models import ConsentEvent, Subscriber
from mailer.subscribers.queries import status_on
from mailer.subscribers.unsubscribe import unsubscribe_token
from tests.conftest import ARTIFACTS, wait_for
from tests.support.factories import FIRST_LIST, stack_keys
from tests.support.subscribers import (
    TaskLog,
    event_rows,
    list_status,
    make,
    settle_confirmation_tasks,  # noqa: F401
    tokens,
)

FIELDS = ["email", "first_name", "last_name", "organisation", "country", "consent",
          "website", "source", "List-Unsubscribe"]
CONTENT_TYPES = [
    "application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=b",
    "multipart/form-data; boundary=", "application/json", "text/plain", "text/html; charset=utf-7",
    "application/x-www-form-urlencoded; charset=latin-1", "*/*", "garbage", None,
]

values = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["yes", "on", "1", "One-Click", "website-embed", "", "anna@example.org",
                     "ａｎｎａ@ｅｘａｍｐｌｅ.org", "x@bücher.de", "a\r\nBcc: v@x.org"]),
    st.emails().map(str),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=300, max_size=6000),
)
random_forms = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)),
                               values, max_size=9)
# Forms that get past validation, so that the database and the mail path see the names.
valid_forms = st.fixed_dictionaries(
    {"email": st.emails().map(str), "consent": st.just("yes")},
    optional={name: values for name in ("first_name", "last_name", "organisation", "country",
                                         "source")},
)
forms = st.one_of(random_forms, valid_forms)


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["b", "----x", "a" * 70]))
    parts = []
    for name, value in draw(forms).items():
        disposition = f'form-data; name="{name}"'
        if draw(st.booleans()) and draw(st.booleans()):
            disposition += '; filename="f.txt"'
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                     + value.encode("utf-8", "surrogatepass") + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    if draw(st.booleans()):  # partial: the body cut short somewhere
        body = body[: draw(st.integers(0, len(body)))]
    return body, f"multipart/form-data; boundary={boundary}"


@st.composite
def urlencoded(draw: st.DrawFn) -> tuple[bytes, str]:
    body = urlencode(draw(forms)).encode()
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return body, "application/x-www-form-urlencoded"


@st.composite
def garbage(draw: st.DrawFn) -> tuple[bytes, str | None]:
    return draw(st.binary(max_size=400)), draw(st.sampled_from(CONTENT_TYPES))


bodies = st.one_of(urlencoded(), multipart(), garbage())


def _mutations(token: str) -> st.SearchStrategy[str]:
    """A real token with one character changed, one cut off, or something appended."""
    return st.one_of(
        st.integers(0, len(token) - 1).flatmap(lambda i: st.sampled_from("AaZz019-_.").map(
            lambda c: token[:i] + c + token[i + 1:]).filter(lambda t: t != token)),
        st.integers(0, len(token) - 1).map(lambda i: token[:i]),
        st.text(max_size=5, min_size=1).map(lambda extra: token + extra),
    )


def _path_token(kind: str, real: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=80).map(lambda t: quote(t, safe="")),
        _mutations(real).map(lambda t: quote(t, safe="")),
        st.sampled_from(["1.x", "²." + "A" * 43, "0." + "A" * 43, "99999999999999999999.x",
                         "..", "%00", "%2e%2e%2f"]),
    ).map(lambda t: f"/{kind}/{t}")


def _requests(confirm_token: str, unsubscribe_token: str) -> st.SearchStrategy[tuple]:
    subscribe = st.tuples(st.just("POST"), st.just("/subscribe"), bodies)
    confirm = st.tuples(st.sampled_from(["GET", "POST"]), _path_token("confirm", confirm_token),
                        bodies)
    unsubscribe = st.tuples(st.sampled_from(["GET", "POST"]),
                            _path_token("unsubscribe", unsubscribe_token), bodies)
    return st.one_of(subscribe, subscribe, confirm, unsubscribe)


def _check_database(sentinels: dict[str, object]) -> None:
    with transaction() as s:
        for sub in s.scalars(select(Subscriber)):
            assert normalise(sub.email) == (sub.email, sub.email_key), sub.email
            for value in (sub.first_name, sub.last_name, sub.organisation, sub.country):
                assert not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value)
            if sub.email_key in sentinels:
                continue
            # Nobody is confirmed or unsubscribed without a real token.
            assert status_on(s, sub.id, FIRST_LIST) == "pending", sub.email
            assert sub.source in ("subscribe-page", "website-embed")
            first = s.scalars(select(ConsentEvent).where(ConsentEvent.subscriber_id == sub.id)
                              .order_by(ConsentEvent.id)).first()
            assert first is not None and first.kind == "subscribed" and first.consent_version
        others = select(Subscriber.id).where(Subscriber.email_key.not_in(list(sentinels)))
        changed = s.scalars(select(ConsentEvent.kind).where(
            ConsentEvent.subscriber_id.in_(others),
            ConsentEvent.kind.in_(["confirmed", "unsubscribed", "resubscribed", "erased"]))).all()
        assert changed == []


def test_a_thousand_random_requests_change_nothing_they_should_not(clean, web, worker) -> None:
    pending = make("sentinel.pending@example.org", "pending", first_name="Pia")
    confirmed = make("sentinel.confirmed@example.org", "confirmed", first_name="Carl")
    [pending_token] = tokens(pending.id)
    confirm_token = confirmation_token_value(pending_token, keys=stack_keys())
    unsubscribe_value = unsubscribe_token(confirmed, keys=stack_keys())
    sentinels = {pending.email_key: pending, confirmed.email_key: confirmed}
    before = {pending.id: event_rows(pending.id), confirmed.id: event_rows(confirmed.id)}
    log_offset, tasks = len(web.output()), TaskLog(worker)
    client = httpx.Client(base_url=web.url, timeout=30)
    seen: dict[int, int] = {}

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(request=_requests(confirm_token, unsubscribe_value))
    def one(request: tuple) -> None:
        method, url, (body, content_type) = request
        headers = {"content-type": content_type} if content_type else {}
        answer = client.request(method, url, content=body if method == "POST" else None,
                                headers=headers)
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (method, url, body[:200], answer.text[:500])
        _check_database(sentinels)

    one()
    assert {pending.id: event_rows(pending.id), confirmed.id: event_rows(confirmed.id)} == before
    assert list_status(pending.email) == "pending"
    assert list_status(confirmed.email) == "confirmed"
    with transaction() as s:
        assert s.get(Subscriber, confirmed.id).first_name == "Carl"
    assert "Traceback" not in web.output()[log_offset:]
    # The names that got in went through the confirmation mail without an error.
    wait_for(lambda: tasks.received() == len(tasks.outcomes()), timeout=120,
             what=lambda: (ARTIFACTS / "fuzz-worker.log").write_text(tasks.since()) and
             "the worker to finish the confirmation mails "
                          f"({tasks.received()} received, {len(tasks.outcomes())} done; "
                          f"its log ends: {tasks.since()[-3000:]})")
    assert "Traceback" not in tasks.since() and "ERROR" not in tasks.since()
    assert tasks.outcomes().count("sent") >= 10
    assert sum(seen.values()) >= 1000
    # The fuzzing reached past the form parser: some sign-ups went through, some failed
    # validation, some tokens were refused.
    assert seen.get(200, 0) and seen.get(422, 0) and seen.get(404, 0), seen
