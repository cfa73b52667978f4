"""Every route of the app, driven with random paths, query strings, bodies and content
types: no answer is a 5xx.

The routes are read from the app's router, so a new route is fuzzed without anyone adding
it here. Requests come as a stranger would send them and as a logged-in editor would (the
session cookie and its CSRF token in every form, so the handlers behind the CSRF check are
reached); the provider webhooks get bodies that are correctly signed (the test holds the
providers' keys) but whose JSON is random, as well as plain garbage. The app is served over
HTTP by uvicorn in this process (tests/support/webhooks.py), on SQLite and PostgreSQL.

``/readyz`` may answer 503: that is its job when a part is down (no worker runs here).
MAILER_FUZZ_EXAMPLES sets the number of requests (default 1,500 per database).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mailer.api_tokens.service import SCOPES
from mailer.api_tokens.service import create as create_token
from mailer.config import get_settings
from mailer.db import transaction
from mailer.subscribers.models import Subscriber
from mailer.webhooks.endpoints import add as add_endpoint
from tests.support.admin import KEEP_ALIVE, Admin, make_staff
from tests.support.factories import make_edition, make_subscribers
from tests.support.webhooks import (
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    TOPIC,
    sendgrid_headers,
    serve_webhooks,
    sns_notification,
)

EXAMPLES = int(os.environ.get("MAILER_FUZZ_EXAMPLES", "1500"))
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
#: Every form field name the pages use: random bodies are made of these and of noise.
FIELD_NAMES = sorted({name for page in TEMPLATES.rglob("*.html")
                      for name in re.findall(r'name="([^"{}]+)"', page.read_text())})
CONTENT_TYPES = [
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=b",
    "multipart/form-data", "multipart/form-data; boundary=", "application/json",
    "text/plain", "application/x-www-form-urlencoded; charset=latin-1", "*/*", "garbage", None,
]
EDITOR = "fuzz-editor@example.org"


def routes() -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, path template, query parameter names) of every route the app serves."""
    from fastapi import FastAPI
    from fastapi.routing import APIRoute
    from starlette.routing import Mount

    from mailer.web.app import create_app

    found: list[tuple[str, str, tuple[str, ...]]] = []

    def walk(table: list[Any], prefix: str = "") -> None:
        for route in table:
            if hasattr(route, "original_router"):  # an included router
                walk(route.original_router.routes, prefix)
            elif isinstance(route, APIRoute):
                query = tuple(p.name for p in route.dependant.query_params)
                found.extend((method, prefix + route.path, query)
                             for method in sorted(route.methods))
            elif isinstance(route, Mount) and isinstance(route.app, FastAPI):  # /api/v1
                walk(route.app.routes, prefix + route.path)
            elif isinstance(route, Mount):
                found.append(("GET", prefix + route.path + "/{path}", ()))

    walk(create_app().routes)
    return found


# --- the pieces of a request ----------------------------------------------------------------------

texts = st.one_of(
    st.text(max_size=40), st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(["", "yes", "1", "0", "-1", "²", "٣", str(2**63), str(2**64 + 7), "9" * 40,
                     "nan", "inf", "2025-12-01", "2099-01-01T09:00", "add", "drop", "up",
                     "One-Click", "editor", "x\r\nBcc: a@b.c", "../../etc/passwd", "%00",
                     "a@b.org", "fuzz-editor@example.org", "'; DROP TABLE subscriber; --"]),
)
ids = st.one_of(st.integers(-3, 12).map(str), texts)


def path_value(name: str, real: dict[str, list[str]]) -> st.SearchStrategy[str]:
    known = real.get(name, [])
    base = ids if name.endswith("_id") else texts
    if name == "provider":
        base = st.one_of(st.sampled_from(["ses", "sendgrid", "mailgun", "postmark"]), texts)
    return (st.one_of(st.sampled_from(known), base) if known else base).map(
        lambda v: quote(v, safe="") or "x")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)


def shaped(keys: list[str], plausible: list[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object with some of a provider's own keys, each of any JSON type."""
    value = st.one_of(json_values, st.sampled_from(plausible))
    return st.dictionaries(st.sampled_from(keys), value, max_size=len(keys)).flatmap(
        lambda d: st.dictionaries(st.text(max_size=8), json_values, max_size=2).map(
            lambda extra: {**extra, **d}))


stamps = st.one_of(st.just("now"), st.sampled_from(["nan", "inf", "-inf", "1e400", "", "x",
                                                   "0", str(2**70)]))


def _stamp(choice: str) -> str:
    return str(int(time.time())) if choice == "now" else choice


@st.composite
def mailgun_body(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    data = draw(shaped(["id", "event", "severity", "reason", "recipient", "delivery-status",
                        "message", "timestamp"],
                       ["failed", "permanent", "temporary", "complained", "suppress-bounce",
                        {"code": 550, "message": "5.1.1 gone", "enhanced-code": "5.1.1"},
                        {"headers": {"message-id": "x@y"}}, "r@example.org"]))
    stamp, token = _stamp(draw(stamps)), draw(st.text(min_size=1, max_size=60))
    signature = hmac.new(MAILGUN_KEY.encode(), (stamp + token).encode("utf-8", "surrogatepass"),
                         hashlib.sha256).hexdigest()
    if draw(st.booleans()):
        signature = draw(st.one_of(st.text(max_size=70), st.just(signature[:-1] + "é")))
    body = {"signature": {"timestamp": stamp, "token": token, "signature": signature},
            "event-data": data}
    if draw(st.integers(0, 5)) == 0:
        body["signature"] = draw(json_values)
    return json.dumps(body).encode("utf-8", "surrogatepass"), {"content-type": "application/json"}


@st.composite
def sendgrid_body(draw: st.DrawFn, key: Any) -> tuple[bytes, dict[str, str]]:
    events = draw(st.lists(shaped(
        ["event", "sg_event_id", "email", "status", "reason", "response", "type",
         "bounce_classification", "smtp-id"],
        ["bounce", "dropped", "deferred", "spamreport", "Invalid", "Reputation", "blocked",
         "Invalid Address", "5.1.1"]), max_size=3))
    body = json.dumps(events if draw(st.integers(0, 4)) else draw(json_values)).encode(
        "utf-8", "surrogatepass")
    headers = sendgrid_headers(key, body)
    choice = draw(stamps)
    if choice != "now":
        import base64

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        signature = key.sign(choice.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers["X-Twilio-Email-Event-Webhook-Signature"] = base64.b64encode(signature).decode()
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = choice
    return body, headers


@st.composite
def postmark_body(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    record = draw(shaped(["RecordType", "ID", "MessageID", "Type", "Email", "Details",
                          "Description"],
                         ["Bounce", "SpamComplaint", "HardBounce", "SoftBounce", "Blocked", 42]))
    auth = f"{POSTMARK_USER}:{POSTMARK_PASSWORD}" if draw(st.booleans()) else draw(texts)
    import base64

    return json.dumps(record).encode("utf-8", "surrogatepass"), {
        "content-type": "application/json",
        "authorization": ("Basic " + base64.b64encode(auth.encode("utf-8", "surrogatepass"))
                          .decode()).strip()}


@st.composite
def ses_body(draw: st.DrawFn, sns: Any) -> tuple[bytes, dict[str, str]]:
    notification = draw(shaped(
        ["notificationType", "eventType", "mail", "bounce", "complaint"],
        ["Bounce", "Complaint", "Delivery",
         {"bounceType": "Permanent", "bounceSubType": "NoEmail",
          "bouncedRecipients": [{"emailAddress": "r@example.org"}]},
         {"complainedRecipients": [{"emailAddress": "r@example.org"}]},
         {"headers": [{"name": "Message-ID", "value": "<x@y>"}]}]))
    message = sns_notification(json.dumps(notification), message_id=draw(st.text(max_size=40)),
                               topic=draw(st.sampled_from([TOPIC, TOPIC, "arn:other"])))
    message["Type"] = draw(st.sampled_from(["Notification", "Notification",
                                            "SubscriptionConfirmation", "Other"]))
    if message["Type"] == "SubscriptionConfirmation":
        message["Token"] = "t"
        message["SubscribeURL"] = draw(st.sampled_from([
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&T=1",
            "https://evil.example/confirm", "http://127.0.0.1/"]))
    if draw(st.integers(0, 5)) == 0:
        message["Timestamp"] = draw(texts)
    if message["Type"] != "Other":
        message = sns.sign(message, draw(st.sampled_from(["1", "2"])))
    if draw(st.integers(0, 5)) == 0:
        message[draw(st.sampled_from(list(message)))] = draw(json_values)
    return json.dumps(message).encode("utf-8", "surrogatepass"), {
        "content-type": "application/json"}


@st.composite
def form_body(draw: st.DrawFn, csrf: str) -> tuple[bytes, dict[str, str]]:
    fields = draw(st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)),
                                  texts, max_size=8))
    if draw(st.integers(0, 5)):
        fields["csrf"] = csrf
    kind = draw(st.sampled_from(["urlencoded", "urlencoded", "multipart", "garbage"]))
    if kind == "urlencoded":
        body = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}"
                        for k, v in fields.items()).encode()
        if draw(st.integers(0, 4)) == 0:  # raw bytes, not percent-escaped, maybe broken
            body = "&".join(f"{k}={v}" for k, v in fields.items()).encode(
                "utf-8", "surrogatepass") + draw(st.binary(max_size=6))
        return body, {"content-type": "application/x-www-form-urlencoded"}
    if kind == "multipart":
        parts = []
        for name, value in fields.items():
            disposition = f'form-data; name="{name}"'
            if draw(st.integers(0, 6)) == 0:
                disposition += '; filename="f.csv"'
            parts.append(f"--b\r\nContent-Disposition: {disposition}\r\n\r\n".encode(
                "utf-8", "surrogatepass") + value.encode("utf-8", "surrogatepass") + b"\r\n")
        body = b"".join(parts) + b"--b--\r\n"
        if draw(st.booleans()):
            body = body[:draw(st.integers(0, len(body)))]
        return body, {"content-type": "multipart/form-data; boundary=b"}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    return draw(st.binary(max_size=300)), ({"content-type": content_type} if content_type
                                           else {})


def query(names: tuple[str, ...]) -> st.SearchStrategy[str]:
    keys = st.one_of(st.sampled_from(names), st.text(max_size=6)) if names else st.text(max_size=6)
    return st.dictionaries(keys, texts, max_size=4).map(
        lambda q: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in q.items()))


# --- the test ----------------------------------------------------------------------------


def test_no_route_answers_a_5xx_to_anything(clean, monkeypatch) -> None:
    make_staff(EDITOR, "editor")
    make_subscribers(3)
    edition_id = make_edition()
    with transaction() as session:
        subscriber_ids = [str(i) for i in session.scalars(select(Subscriber.id))]
    with transaction() as session:
        public_ids = [str(i) for i in session.scalars(select(Subscriber.public_id))]
        _, api_token = create_token(session, name="fuzz", scopes=list(SCOPES), by="test",
                                    rate_limit_per_minute=100_000)
        endpoint = add_endpoint(session, url="http://127.0.0.1:9/hooks",
                                events=["subscriber.confirmed"], by="test",
                                settings=get_settings().webhooks)
        endpoint_ids = [str(endpoint.id)]
    real = {"edition_id": [str(edition_id)], "subscriber_id": subscriber_ids,
            "public_id": public_ids, "endpoint_id": endpoint_ids,
            "provider": ["ses", "sendgrid", "mailgun", "postmark"]}
    table = routes()
    assert len(table) > 50  # the router was read, not an empty list
    # Each provider as a route of its own, so that signed bodies reach every one of them.
    table += [(method, path.replace("{provider}", provider), query)
              for method, path, query in list(table) if "{provider}" in path
              for provider in real["provider"] for _ in range(3)]
    seen: dict[tuple[str, str], set[int]] = {}

    with serve_webhooks(monkeypatch) as site:
        editor = Admin(site.url, ip="192.0.2.250")

        def log_in() -> None:
            editor.http.cookies.clear()
            assert editor.login(EDITOR).status_code == 303
            editor._csrf = None

        log_in()
        stranger = httpx.Client(base_url=site.url, timeout=60, follow_redirects=False,
                                limits=KEEP_ALIVE)

        @st.composite
        def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None, dict[str, str], bool]:
            method, template, names = draw(st.sampled_from(table))
            if draw(st.integers(0, 15)) == 0:
                method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
            path = re.sub(r"\{(\w+)\}", lambda m: draw(path_value(m.group(1), real)), template)
            if draw(st.integers(0, 20)) == 0:
                path = "/" + quote(draw(texts), safe="/")
            qs = draw(query(names))
            url = f"{path}?{qs}" if qs else path
            as_editor = path.startswith("/admin") and draw(st.integers(0, 4)) > 0
            body: bytes | None = None
            headers: dict[str, str] = {}
            if method in ("POST", "PUT", "PATCH"):
                provider = path.removeprefix("/webhooks/") if path.startswith("/webhooks/") \
                    else ""
                maker = {"mailgun": mailgun_body(), "postmark": postmark_body(),
                         "sendgrid": sendgrid_body(site.sendgrid_key),
                         "ses": ses_body(site.sns)}.get(provider)
                if maker is not None and draw(st.integers(0, 5)):
                    body, headers = draw(maker)
                elif path.startswith("/api/") and draw(st.integers(0, 3)):
                    body = json.dumps(draw(st.one_of(json_values, shaped(
                        ["email", "first_name", "last_name", "organisation", "country",
                         "consent", "ip", "user_agent"],
                        ["a@example.org", "fuzz@example.org", True, False, "x\r\ny",
                         "1.2.3.4", "\u0000", "9" * 400])))).encode()
                    headers = {"content-type": "application/json"}
                else:
                    body, headers = draw(form_body(editor.csrf))
            if path.startswith("/api/") and draw(st.integers(0, 4)) > 0:
                headers = {**headers, "Authorization": f"Bearer {api_token}"}  # past the check
            return method, url, body, headers, as_editor

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(request=requests())
        def one(request: tuple[str, str, bytes | None, dict[str, str], bool]) -> None:
            method, url, body, headers, as_editor = request
            client = editor.http if as_editor else stranger
            answer = client.request(method, url, content=body, headers=headers)
            path = url.split("?", 1)[0]
            key = (method, path.split("/")[1] if "/" in path else path)
            seen.setdefault(key, set()).add(answer.status_code)
            if path == "/readyz" and answer.status_code == 503:
                return
            assert answer.status_code < 500, (method, url, headers, (body or b"")[:300],
                                              answer.text[:800])
            if as_editor and (path.startswith("/admin/log") or answer.headers.get(
                    "location", "").startswith("/admin/login")):
                log_in()  # logged out (by the logout route, or a session erased)

        one()
        stranger.close()
        editor.close()

    statuses = set().union(*seen.values())
    # The fuzzing reached past the parsers: pages, redirects, refusals of each kind.
    assert {200, 303, 403, 404} <= statuses, seen
    assert {code for (m, p), codes in seen.items() if p == "webhooks" for code in codes} & {
        200, 409}, seen
