"""``/api/v1`` over real HTTP against the test web server (both databases): tokens from
the command line, bearer auth (401/403/429), RFC 9457 problems, the subscriber search with
keyset pagination, and a sign-up that is the form's sign-up (double opt-in, the consent
record with the source ``api:<token name>``, the per-address and per-token limits, the
confirmation mail from a real worker, the audit log)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import httpx
import lxml.html
import pytest
from sqlalchemy import select, update

from mailer.api_tokens import service as tokens
from mailer.api_tokens.models import ApiToken
from mailer.audit import AuditEntry
from mailer.config import get_settings
from mailer.db import transaction, utcnow
from mailer.subscribers.models import ConsentEvent
from tests.conftest import wait_for, wait_settled
from tests.support.subscribers import events, list_status, make, subscriber

MAILER = str(Path(sys.executable).parent / "mailer")
PROBLEM = "application/problem+json"


def token(name: str, *scopes: str, rate: int = 600, expires_days: int | None = None) -> str:
    with transaction() as session:
        _, value = tokens.create(session, name=name, scopes=list(scopes), by="test",
                                 expires_days=expires_days, rate_limit_per_minute=rate)
    return value


def api(web, value: str | None = None) -> httpx.Client:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {value}"} if value else {}
    return httpx.Client(base_url=f"{web.url}/api/v1", headers=headers, timeout=15)


def is_problem(answer: httpx.Response, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM), answer.headers
    body = answer.json()
    assert body["status"] == status and body["title"] and "type" in body
    return body


def fields(answer: httpx.Response) -> set[str]:
    return {e["field"] for e in is_problem(answer, 422)["errors"]}


def test_tokens_are_made_shown_once_listed_and_revoked_from_the_command_line(clean) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([MAILER, "tokens", *args], env=clean.env, capture_output=True,
                              text=True, timeout=120)

    made = run("create", "--name", "crm", "--scope", "subscribers:read",
               "--scope", "subscribers:write", "--expires-days", "30")
    assert made.returncode == 0, made.stderr
    value = made.stdout.strip()
    assert re.fullmatch(r"mlr_[A-Za-z0-9_-]{43}", value)
    assert "shown only this once" in made.stderr
    with transaction() as session:
        row = session.scalars(select(ApiToken)).one()
        assert row.token_hash == hashlib.sha256(value.encode()).hexdigest()
        assert value not in (row.hint, row.token_hash) and value.startswith(row.hint)
        assert row.scopes == ["subscribers:read", "subscribers:write"]
        assert row.created_by.startswith("cli") and row.revoked_at is None
        assert dt.timedelta(days=29) < row.expires_at - utcnow() <= dt.timedelta(days=30)
        [audit] = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "api_token.create")).all()
        assert audit.target == "api_token:crm"

    listed = run("list")
    assert listed.returncode == 0 and "crm" in listed.stdout and value not in listed.stdout
    assert "subscribers:read" in listed.stdout

    for args, says in (
            (("create", "--name", "crm", "--scope", "lists"), "already"),
            (("create", "--name", "x", "--scope", "everything"), "Unknown scope everything"),
            (("create", "--name", "Bad Name!", "--scope", "lists"), "name"),
            (("revoke", "nobody"), "no token named nobody")):
        refused = run(*args)
        assert refused.returncode == 1 and says in refused.stderr, refused.stderr

    revoked = run("revoke", "crm")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    with transaction() as session:
        assert session.scalars(select(ApiToken)).one().revoked_at is not None


def test_unknown_expired_revoked_tokens_are_401_a_missing_scope_403_too_many_429(
        clean, web) -> None:
    reader = token("reader", "subscribers:read", rate=5)
    writer = token("writer", "subscribers:write")
    soon_gone = token("expiring", "subscribers:read", expires_days=1)
    revoked = token("revoked", "subscribers:read")

    missing = api(web).get("/subscribers")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "token is needed" in is_problem(missing, 401)["detail"]
    for value in ("nonsense", "mlr_" + "A" * 43, reader + "x", "mlr_\u00e9"):
        answer = api(web).get("/subscribers",
                              headers={"Authorization": f"Bearer {value}".encode()})
        assert "not known" in is_problem(answer, 401)["detail"]
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]

    with transaction() as session:
        session.execute(update(ApiToken).where(ApiToken.name == "expiring")
                        .values(expires_at=utcnow() - dt.timedelta(seconds=1)))
        tokens.revoke(session, "revoked", by="test")
    assert "expired" in is_problem(api(web, soon_gone).get("/subscribers"), 401)["detail"]
    assert "revoked" in is_problem(api(web, revoked).get("/subscribers"), 401)["detail"]

    no_scope = api(web, writer).get("/subscribers")
    assert "subscribers:read" in is_problem(no_scope, 403)["detail"]
    no_write = api(web, reader).post("/subscribers", json={"email": "a@example.org",
                                                           "consent": True})
    assert "subscribers:write" in is_problem(no_write, 403)["detail"]

    # The reader's limit is 5 a minute: one used above (the 403), four more, then a 429.
    client = api(web, reader)
    for _ in range(4):
        assert client.get("/subscribers").status_code == 200
    over = client.get("/subscribers")
    assert "5 requests" in is_problem(over, 429)["detail"]
    assert over.headers["retry-after"] == "60"
    assert api(web, writer).post("/subscribers", json={}).status_code == 422  # its own limit

    with transaction() as session:
        used = {t.name: t.last_used_at for t in session.scalars(select(ApiToken))}
    assert used["reader"] is not None and used["writer"] is not None
    assert used["expiring"] is None and used["revoked"] is None


def test_search_pages_through_subscribers_by_keyset_and_reads_one(clean, web) -> None:
    for i in range(5):
        make(f"reader{i}@example.org", "confirmed", first_name=f"R{i}")
    make("Someone.Else@Example.net", "pending")
    make("left@example.org", "unsubscribed")
    client = api(web, token("crm", "subscribers:read"))

    seen, after, pages = [], None, 0
    while True:
        answer = client.get("/subscribers", params={"limit": 2, **({"after": after}
                                                                   if after else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += [s["email"] for s in body["items"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert pages == 4 and len(seen) == len(set(seen)) == 7

    by_part = client.get("/subscribers", params={"email": "ELSE@"}).json()
    assert [s["email"] for s in by_part["items"]] == ["Someone.Else@example.net"]
    assert by_part["items"][0]["status"] == "pending" and by_part["next"] is None
    confirmed = client.get("/subscribers", params={"status": "confirmed", "email": "reader"})
    assert [s["first_name"] for s in confirmed.json()["items"]] == [f"R{i}" for i in range(5)]
    assert client.get("/subscribers", params={"email": "%"}).json()["items"] == []
    for beyond in (str(2**31 - 1), str(2**31), "9" * 18):  # past any id: an empty page
        assert client.get("/subscribers", params={"after": beyond}).json() == {
            "items": [], "next": None}

    one = by_part["items"][0]
    got = client.get(f"/subscribers/{one['public_id']}")
    assert got.status_code == 200 and got.json() == one
    assert "no subscriber" in is_problem(client.get("/subscribers/nobody"), 404)["detail"]

    assert fields(client.get("/subscribers", params={"limit": 0})) == {"limit"}
    assert fields(client.get("/subscribers", params={"limit": "many"})) == {"limit"}
    assert fields(client.get("/subscribers", params={"after": "-1"})) == {"after"}
    assert fields(client.get("/subscribers", params={"status": "gone"})) == {"status"}
    assert fields(client.get("/subscribers", params={"after": "9" * 30})) == {"after"}
    is_problem(client.get("/no-such-route"), 404)
    is_problem(client.delete("/subscribers"), 405)


def test_a_sign_up_through_the_api_is_a_double_opt_in_sign_up(clean, web, worker) -> None:
    client = api(web, token("website-form", "subscribers:write"))
    settings = get_settings()
    person = {"email": "Ida.Api@Example.ORG", "first_name": "Ida", "last_name": "Nilsson",
              "consent": True, "ip": "198.51.100.7", "user_agent": "WordPress form/2"}

    first = client.post("/subscribers", json=person)
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    sub = subscriber("ida.api@example.org")
    assert sub is not None and sub.source == "api:website-form"
    assert list_status("ida.api@example.org") == "pending"
    [mail] = wait_for(lambda: clean.smtp.to("Ida.Api@example.org"), what="confirmation mail")
    assert b"/confirm/" in mail.data
    with transaction() as session:
        [signed] = session.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == sub.id, ConsentEvent.kind == "subscribed")).all()
        assert (signed.source, signed.ip, signed.user_agent) == (
            "api:website-form", "198.51.100.7", "WordPress form/2")
        assert signed.consent_text == settings.signup.consent_text
        assert signed.consent_version == settings.signup.consent_version
        [audit] = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "subscriber.sign_up")).all()
        assert audit.actor == "api:website-form" and audit.target == f"subscriber:{sub.id}"

    # The same person again today: the same answer, recorded, and no second mail.
    again = client.post("/subscribers", json=person)
    assert again.status_code == 202 and again.json() == first.json()
    make("already@example.org", "confirmed")
    subscribed = client.post("/subscribers", json={"email": "already@example.org",
                                                   "consent": True})
    assert subscribed.status_code == 202 and subscribed.json() == first.json()
    assert wait_settled(lambda: len(clean.smtp.to("Ida.Api@example.org"))) == 1
    assert events(sub.id).count("subscribed") == 2
    assert list_status("already@example.org") == "confirmed"
    assert len(clean.smtp.to("already@example.org")) == 0

    # Wrong input: a 422 naming each wrong field; nothing stored.
    assert fields(client.post("/subscribers", json={"email": "not an address",
                                                    "consent": True})) == {"email"}
    assert fields(client.post("/subscribers", json={"email": "b@example.org",
                                                    "consent": False})) == {"consent"}
    assert fields(client.post("/subscribers", json={"consent": True})) == {"email"}
    assert fields(client.post("/subscribers", json={
        "email": "c@example.org", "consent": True,
        "first_name": "x\r\nBcc: y@example.org"})) == {"first_name"}
    assert fields(client.post("/subscribers", json={
        "email": "d@example.org", "consent": True, "last_name": "x" * 101})) == {"last_name"}
    assert fields(client.post("/subscribers", json={
        "email": "e@example.org", "consent": True, "status": "confirmed"})) == {"status"}
    assert fields(client.post("/subscribers", json={
        "email": "f@example.org", "consent": True, "ip": "1.2.3.4\u0000"})) == {"ip"}
    assert fields(client.post("/subscribers", json={
        "email": "g\u0000@example.org", "consent": True})) == {"email"}
    broken = client.post("/subscribers", content=b"\xff\xfe not json",
                         headers={"Content-Type": "application/json"})
    assert "parsing the body" in is_problem(broken, 400)["detail"]
    assert fields(client.post("/subscribers", json=["a list"])) == {"body"}
    for address in ("b", "c", "d", "e", "f"):
        assert subscriber(f"{address}@example.org") is None


@pytest.fixture
def strict_web(clean):  # type: ignore[no-untyped-def]
    """The web app with the form's per-IP limit at 2 an hour (the stack's is a million)."""
    from tests.support.processes import WebServer, free_port

    env = {**clean.env, "MAILER_SIGNUP_LIMIT_PER_IP_PER_HOUR": "2"}
    server = WebServer(env, clean.tmp / "web-strict.log", free_port()).start()
    yield server
    server.stop()


def test_the_per_ip_limit_counts_per_token_through_the_api(strict_web) -> None:
    one, other = api(strict_web, token("one", "subscribers:write")), api(
        strict_web, token("other", "subscribers:write"))
    for i in range(2):
        assert one.post("/subscribers", json={"email": f"p{i}@example.org",
                                              "consent": True}).status_code == 202
    over = one.post("/subscribers", json={"email": "p3@example.org", "consent": True})
    assert "2 sign-ups in an hour" in is_problem(over, 429)["detail"]
    assert subscriber("p3@example.org") is None
    # Another token has its own count (both come from the same IP address here).
    assert other.post("/subscribers", json={"email": "p3@example.org",
                                            "consent": True}).status_code == 202


def test_the_openapi_description_and_the_docs_come_from_this_server(clean, web) -> None:
    schema = httpx.get(f"{web.url}/api/v1/openapi.json", timeout=10)
    assert schema.status_code == 200
    spec = schema.json()
    assert set(spec["paths"]) == {
        "/subscribers", "/subscribers/import", "/subscribers/{public_id}",
        "/subscribers/{public_id}/unsubscribe",
        "/subscribers/{public_id}/export", "/suppressions", "/suppressions/{address_hash}",
        "/articles/import", "/articles", "/articles/{article_id}", "/bounces", "/stats",
        "/editions", "/editions/{edition_id}", "/editions/{edition_id}/preview",
        "/editions/{edition_id}/progress", "/editions/{edition_id}/test",
        "/editions/{edition_id}/schedule", "/editions/{edition_id}/send",
        "/editions/{edition_id}/pause", "/editions/{edition_id}/resume",
        "/editions/{edition_id}/cancel", "/editions/{edition_id}/articles",
        "/editions/{edition_id}/articles/{article_id}",
        "/editions/{edition_id}/complaints/acknowledge", "/lists", "/lists/{slug}"}
    assert spec["servers"] == [{"url": "/api/v1"}]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert PROBLEM in spec["paths"]["/subscribers"]["post"]["responses"]["422"]["content"]
    assert httpx.get(f"{web.url}/openapi.json", timeout=10).status_code == 404

    docs = httpx.get(f"{web.url}/api/v1/docs", timeout=10)
    assert docs.status_code == 200
    csp = docs.headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", csp).group(1)
    assert script_src == "'self'" and "default-src 'none'" in csp
    page = lxml.html.fromstring(docs.text)
    assert not page.xpath("//script[not(@src)]")  # no inline script
    urls = page.xpath("//script/@src | //link/@href")
    assert urls and all(u.startswith("/api/v1/docs/") for u in urls), urls
    for url in urls:
        answer = httpx.get(f"{web.url}{url}", timeout=10)
        assert answer.status_code == 200 and answer.content, url
    init = httpx.get(f"{web.url}/api/v1/docs/init.js", timeout=10).text
    assert "/api/v1/openapi.json" in init and "validatorUrl: null" in init


def audit_actions(target: str) -> list[tuple[str, str]]:
    with transaction() as session:
        return [(e.action, e.actor) for e in session.scalars(
            select(AuditEntry).where(AuditEntry.target == target).order_by(AuditEntry.id))]


def test_a_subscriber_is_unsubscribed_exported_and_erased_through_the_api(clean, web) -> None:
    reader = make("Reader@Example.org", "confirmed", first_name="Ada")
    target = f"subscriber:{reader.id}"
    reading = api(web, token("reader", "subscribers:read"))
    writing = api(web, token("crm", "subscribers:write"))

    # each route wants its scope: reading cannot change, writing cannot read the export
    is_problem(reading.post(f"/subscribers/{reader.public_id}/unsubscribe"), 403)
    is_problem(reading.delete(f"/subscribers/{reader.public_id}"), 403)
    is_problem(writing.get(f"/subscribers/{reader.public_id}/export"), 403)
    assert list_status("reader@example.org") == "confirmed"

    first = writing.post(f"/subscribers/{reader.public_id}/unsubscribe")
    assert first.status_code == 200 and first.json() == {"changed": True}, first.text
    again = writing.post(f"/subscribers/{reader.public_id}/unsubscribe")
    assert again.json() == {"changed": False}  # a repeat changes nothing, records nothing
    assert list_status("reader@example.org") == "unsubscribed"
    assert events(reader.id)[-1] == "unsubscribed"
    with transaction() as session:
        [event] = session.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == reader.id,
            ConsentEvent.kind == "unsubscribed")).all()
        assert event.channel == "api"
    assert audit_actions(target) == [("subscriber.unsubscribe", "api:crm")]

    export = reading.get(f"/subscribers/{reader.public_id}/export")
    assert export.status_code == 200, export.text
    data = export.json()
    assert data["email"] == "Reader@example.org" and data["first_name"] == "Ada"
    assert [e["event"] for e in data["consent_history"]][-1] == "unsubscribed"
    assert audit_actions(target)[-1] == ("subscriber.export", "api:reader")

    for unknown in ("nobody", "0" * 32):
        is_problem(writing.post(f"/subscribers/{unknown}/unsubscribe"), 404)
        is_problem(reading.get(f"/subscribers/{unknown}/export"), 404)
        is_problem(writing.delete(f"/subscribers/{unknown}"), 404)
    assert fields(writing.delete("/subscribers/" + "x" * 65)) == {"public_id"}

    gone = writing.delete(f"/subscribers/{reader.public_id}")
    assert gone.status_code == 204, gone.text
    assert subscriber("reader@example.org") is None
    is_problem(reading.get(f"/subscribers/{reader.public_id}"), 404)
    assert audit_actions(target)[-1] == ("subscriber.erase", "api:crm")
    # the erasure leaves the address suppressed, by its hash only
    listing = api(web, token("ops", "suppressions")).get("/suppressions").json()["items"]
    assert [(s["reason"], s["subscriber_email"]) for s in listing] == [("erased", None)]
    assert listing[0]["address_hash"] == reader.address_hash


def suppression_audit() -> list[tuple[str, str]]:
    with transaction() as session:
        return [(e.action, e.actor) for e in session.scalars(
            select(AuditEntry).where(AuditEntry.action.like("suppression.%"))
            .order_by(AuditEntry.id))]


def test_suppressions_are_listed_added_and_lifted_through_the_api(clean, web) -> None:
    client = api(web, token("ops", "suppressions"))
    is_problem(api(web, token("crm", "subscribers:read")).get("/suppressions"), 403)
    make("kept@example.org", "confirmed")

    added = client.post("/suppressions", json={"email": "Kept@Example.org",
                                               "evidence": "asked by phone"})
    assert added.status_code == 201, added.text
    hash_ = added.json()["address_hash"]
    assert added.json() == {"address_hash": hash_, "added": True}
    assert client.post("/suppressions", json={"email": "kept@example.org"}).json() == {
        "address_hash": hash_, "added": False}  # already there: nothing added twice
    assert client.post("/suppressions", json={"email": "other@example.net"}).json()["added"]

    items = client.get("/suppressions").json()["items"]
    assert len(items) == 2 and items[1]["address_hash"] == hash_  # newest first
    assert items[1] | {"created_at": None} == {
        "address_hash": hash_, "reason": "manual", "created_at": None,
        "created_by": "api:ops", "subscriber_email": "kept@example.org"}
    assert len(client.get("/suppressions", params={"limit": 1}).json()["items"]) == 1
    assert client.get("/suppressions", params={"reason": "complaint"}).json() == {"items": []}
    assert suppression_audit() == [("suppression.add", "api:ops")] * 2  # the repeat: none

    assert fields(client.post("/suppressions", json={"email": "not an address"})) == {"email"}
    assert fields(client.post("/suppressions", json={"email": "a@b", "x": 1})) == {"x"}
    assert fields(client.get("/suppressions", params={"reason": "whim"})) == {"reason"}
    assert fields(client.get("/suppressions", params={"limit": 0})) == {"limit"}
    assert fields(client.delete("/suppressions/not-a-hash")) == {"address_hash"}
    is_problem(client.delete("/suppressions/" + "0" * 64), 404)

    assert client.delete(f"/suppressions/{hash_}").status_code == 204
    left = client.get("/suppressions").json()["items"]
    assert [s["subscriber_email"] for s in left] == [None]  # other@example.net's remains
    assert suppression_audit()[-1] == ("suppression.remove", "api:ops")
    is_problem(client.delete(f"/suppressions/{hash_}"), 404)  # lifted once only

    erased = make("erased@example.org", "confirmed")
    assert api(web, token("eraser", "subscribers:write")).delete(
        f"/subscribers/{erased.public_id}").status_code == 204
    is_problem(client.delete(f"/suppressions/{erased.address_hash}"), 409)  # it stays
