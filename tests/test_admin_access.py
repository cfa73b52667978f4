"""Who may do what in the admin: anonymous users and viewers are refused where they must
be, every form checks its CSRF token, a session cannot be fixed in advance, ``next=``
never leads off the site, sessions expire, logins lock out."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select, update

from mailer.bounces.actions import record_bounce
from mailer.bounces.models import BounceClass
from mailer.config import get_settings
from mailer.db import transaction, utcnow
from mailer.editions.models import Edition
from mailer.lists import service as lists
from mailer.lists import topics
from mailer.lists.models import MailingList, Topic
from mailer.staff.models import AuditEntry, StaffSession
from mailer.subscribers.models import Subscriber, Suppression
from mailer.webhooks.endpoints import add as add_endpoint
from mailer.webhooks.models import WebhookEndpoint
from tests.support.admin import PASSWORD, Admin, csrf_of, make_staff
from tests.support.factories import BOUNCES, make_edition, make_subscribers
from tests.support.processes import WebServer, free_port

EDITOR, VIEWER = "ed@example.org", "ops@example.org"

PUBLIC = {("GET", "/admin/login"), ("POST", "/admin/login"), ("POST", "/admin/login/code"),
          ("GET", "/admin/assets/admin.js")}
VIEWER_PAGES = {
    ("GET", "/admin"), ("GET", "/admin/editions"), ("GET", "/admin/editions/{edition_id}"),
    ("GET", "/admin/editions/{edition_id}/preview"),
    ("GET", "/admin/editions/{edition_id}/preview.html"),
    ("GET", "/admin/editions/{edition_id}/progress"),
    ("GET", "/admin/editions/{edition_id}/progress.json"),
    ("GET", "/admin/bounces"), ("GET", "/admin/ops"), ("GET", "/admin/audit"),
    ("GET", "/admin/articles"), ("POST", "/admin/logout"),
    # The lists and their counts (no person's data); changing them is editors'.
    ("GET", "/admin/lists"), ("GET", "/admin/lists/{list_id}"),
    # What readers read: every figure is a count, nobody's personal data.
    ("GET", "/admin/editions/{edition_id}/insight"),
    ("GET", "/admin/editions/{edition_id}/insight/{name}.csv"),
    ("GET", "/admin/insight/list"), ("GET", "/admin/insight/list/{name}.csv"),
    ("GET", "/admin/insight/deliverability"),
    ("GET", "/admin/insight/deliverability/{name}.csv"),
    # Every staff member looks after their own second factor.
    ("GET", "/admin/account"), ("GET", "/admin/account/totp"),
    ("POST", "/admin/account/totp"), ("POST", "/admin/account/totp/off"),
}
EDITOR_PAGES = {
    ("GET", "/admin/editions/{edition_id}/send"), ("GET", "/admin/editions/{edition_id}/cancel"),
    ("GET", "/admin/subscribers"), ("GET", "/admin/subscribers/{subscriber_id}"),
    ("GET", "/admin/subscribers/{subscriber_id}/export.json"),
    ("GET", "/admin/subscribers-import"), ("GET", "/admin/subscribers-export.csv"),
    ("GET", "/admin/suppressions"), ("GET", "/admin/tokens"),
    ("GET", "/admin/webhooks"), ("GET", "/admin/webhooks/{endpoint_id}"),
    ("GET", "/admin/lists/{list_id}/topics"),
}
#: What each action gets posted, so that only the access check can refuse it.
ACTIONS = {
    "/admin/editions": {"since": "2025-12-01", "until": "2025-12-31"},
    "/admin/editions/{edition_id}/edit": {"subject": "Changed by an intruder"},
    "/admin/editions/{edition_id}/window": {"since": "2020-01-01"},
    "/admin/editions/{edition_id}/articles": {"action": "drop", "article": "1"},
    "/admin/editions/{edition_id}/test": {"to": "intruder@example.org"},
    "/admin/editions/{edition_id}/schedule": {"at": "2099-01-01T09:00"},
    "/admin/editions/{edition_id}/unschedule": {},
    "/admin/editions/{edition_id}/send": {"confirm": "yes"},
    "/admin/editions/{edition_id}/pause": {},
    "/admin/editions/{edition_id}/resume": {},
    "/admin/editions/{edition_id}/cancel": {"confirm": "yes"},
    "/admin/editions/{edition_id}/acknowledge": {},
    "/admin/subscribers/{subscriber_id}/erase": {"confirm": "reader00000@example.net"},
    "/admin/subscribers/{subscriber_id}/suppress": {"evidence": "intruder"},
    "/admin/subscribers-import": {"source": "intruder"},
    "/admin/suppressions": {"email": "victim@example.org"},
    "/admin/suppressions/remove": {"hash": "0" * 64},
    "/admin/bounces/{bounce_id}/confirm": {},
    "/admin/articles": {"url": "https://www.cep-probation.org/feed/"},
    "/admin/tokens": {"name": "intruder", "scope-subscribers:read": "yes"},
    "/admin/tokens/revoke": {"name": "intruder"},
    "/admin/webhooks": {"url": "http://127.0.0.1:9/intruder", "event-subscriber.confirmed": "1"},
    "/admin/webhooks/{endpoint_id}/remove": {},
    "/admin/webhooks/{endpoint_id}/enable": {},
    "/admin/webhooks/{endpoint_id}/redeliver": {"delivery": "1"},
    "/admin/lists/{list_id}/topics/{topic_id}/{action}": {"label": "Renamed by an intruder"},
    "/admin/lists": {"slug": "intruders", "name": "Intruders", "list_id": "in.example.org"},
    "/admin/lists/{list_id}/edit": {"name": "Changed by an intruder", "list_id": "x.example.org"},
    "/admin/lists/{list_id}/archive": {"confirm": "newsletter"},
}


def admin_routes() -> set[tuple[str, str]]:
    from mailer.web.app import create_app

    found = set()
    for included in create_app().routes:
        router = getattr(included, "original_router", None)
        for route in getattr(router, "routes", [included]):
            path = getattr(route, "path", "")
            if path.startswith("/admin"):
                found |= {(method, path) for method in route.methods}
    return found


def test_every_admin_route_has_an_access_rule() -> None:
    posts = {("POST", path) for path in ACTIONS}
    assert admin_routes() == PUBLIC | VIEWER_PAGES | EDITOR_PAGES | posts


@pytest.fixture
def world(clean, web):  # type: ignore[no-untyped-def]
    """An editor, a viewer, a draft edition and a subscriber; returns the path parameters."""
    make_staff(EDITOR, "editor")
    make_staff(VIEWER, "viewer")
    make_subscribers(2)
    edition_id = make_edition()
    with transaction() as session:
        subscriber_id = session.scalar(select(func.min(Subscriber.id)))
        # An unverified hard bounce naming that subscriber: confirming it would suppress.
        bounce_id = record_bounce(
            session, bounces=BOUNCES, bounce_class=BounceClass.hard, source="mx",
            recipient="x@example.net",
            status_code="5.1.1", unverified="no-token", claimed_subscriber_id=subscriber_id,
            fingerprint="access-test").id  # type: ignore[union-attr]
        endpoint_id = add_endpoint(session, url="http://127.0.0.1:9/hooks",
                                   events=["subscriber.confirmed"], by="test",
                                   settings=get_settings().webhooks).id
        list_id = lists.default_list(session).id
        topics.sync(session, list_id)
        topic_id = topics.catalogue(session, list_id)[0].id
    return {"edition_id": edition_id, "subscriber_id": subscriber_id, "bounce_id": bounce_id,
            "endpoint_id": endpoint_id, "list_id": list_id, "topic_id": topic_id,
            "action": "rename"}


def state() -> tuple[object, ...]:
    """What an action could change: editions, subscribers, suppressions, staff actions,
    webhook endpoints, lists."""
    with transaction() as session:
        editions = tuple(session.execute(select(Edition.id, Edition.state, Edition.subject,
                                                Edition.scheduled_at)).all())
        return (editions, session.scalar(select(func.count()).select_from(Subscriber)),
                session.scalar(select(func.count()).select_from(Suppression)),
                tuple(session.scalars(select(AuditEntry.action).where(
                    AuditEntry.action.not_like("login%")))),
                tuple(session.execute(select(WebhookEndpoint.id, WebhookEndpoint.url,
                                             WebhookEndpoint.enabled))),
                tuple(session.execute(select(Topic.id, Topic.label, Topic.hidden,
                                             Topic.merged_into).order_by(Topic.id))),
                tuple(session.execute(select(MailingList.id, MailingList.slug, MailingList.name,
                                             MailingList.list_id, MailingList.archived_at))))


#: A table of each insight page, for its ``{name}.csv``.
CSV_OF = {"/admin/editions/{edition_id}/insight": "outcome", "/admin/insight/list": "weeks",
          "/admin/insight/deliverability": "domains"}


def fill(path: str, params: dict[str, int]) -> str:
    name = CSV_OF.get(path.removesuffix("/{name}.csv"), "")
    return path.format(**params, name=name)


def test_anonymous_users_are_sent_to_the_login_and_change_nothing(world, web) -> None:
    before = state()
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    for method, path in sorted(admin_routes() - PUBLIC):
        url = fill(path, world)
        if method == "GET":
            answer = client.get(url)
            if url.endswith(".json"):
                assert answer.status_code == 401, url
                continue
            assert answer.status_code == 303, url
            target = urlsplit(answer.headers["location"])
            assert target.path == "/admin/login", url
            assert parse_qs(target.query)["next"] == [url], url
        else:
            answer = client.post(url, data={**ACTIONS.get(path, {}), "csrf": "x"})
            assert answer.status_code == 303, url
            assert answer.headers["location"] == "/admin/login", url
    assert state() == before


def test_viewers_read_but_never_act(world, web) -> None:
    viewer = Admin(web.url)
    assert viewer.login(VIEWER).headers["location"] == "/admin/ops"
    before = state()
    for path in sorted(path for method, path in VIEWER_PAGES if method == "GET"):
        answer = viewer.get(fill(path, world))
        assert answer.status_code in (200, 303), path
    for _, path in sorted(EDITOR_PAGES):
        answer = viewer.get(fill(path, world))
        assert answer.status_code == 403, path
        assert "editor" in answer.text
    for path, data in ACTIONS.items():
        answer = viewer.post(fill(path, world), data)  # with the viewer's own valid token
        assert answer.status_code == 403, path
    assert state() == before
    # The viewer's pages offer no form that would change anything.
    page = viewer.get(fill("/admin/editions/{edition_id}", world)).text
    actions = set(re.findall(r'<form[^>]+method="post" action="([^"]+)"', page))
    assert actions == {"/admin/logout"}


def test_every_form_checks_its_csrf_token(world, web) -> None:
    editor, other = Admin(web.url), Admin(web.url)
    editor.login(EDITOR)
    make_staff("other@example.org", "editor")
    other.login("other@example.org")
    assert editor.csrf != other.csrf
    before = state()
    for path, data in ACTIONS.items():
        url = fill(path, world)
        for token in (None, "", "forged", other.csrf, editor.csrf[:-1]):
            fields = dict(data) if token is None else {**data, "csrf": token}
            answer = editor.post(url, fields, csrf=False)
            assert answer.status_code == 403, (url, token)
    assert state() == before
    logout = editor.post("/admin/logout", {"csrf": other.csrf}, csrf=False)
    assert logout.status_code == 403
    assert editor.get("/admin/editions").status_code == 200  # still logged in
    # The right token works (the check is not refusing everything).
    answer = editor.post(fill("/admin/editions/{edition_id}/edit", world),
                         {"subject": "A proper change"})
    assert answer.status_code == 303
    with transaction() as session:
        assert session.get(Edition, world["edition_id"]).subject == "A proper change"


def test_the_login_form_has_its_own_token(world, web) -> None:
    bare = httpx.post(f"{web.url}/admin/login", data={"email": EDITOR, "password": PASSWORD})
    assert bare.status_code == 403 and "mailer_admin=" not in bare.headers.get("set-cookie", "")
    client = httpx.Client(base_url=web.url)
    token = csrf_of(client.get("/admin/login").text)
    # Its last character changed (one appended could be the signature's next one: a
    # signature may be given shorter or longer, from 16 characters up; 1 run in 64).
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    wrong = client.post("/admin/login", data={"csrf": forged, "email": EDITOR,
                                              "password": PASSWORD}, follow_redirects=False)
    assert wrong.status_code == 403
    with transaction() as session:
        assert session.scalars(select(StaffSession)).all() == []


def test_no_session_fixation(world, web) -> None:
    planted = "attacker-chosen-session-value"
    client = Admin(web.url)
    client.http.cookies.set("mailer_admin", planted, domain="127.0.0.1", path="/")
    client.login(EDITOR)
    value = client.http.cookies.get("mailer_admin")
    assert value and value != planted
    # A session the attacker had (one of their own) is ended by the victim's login.
    attacker = Admin(web.url)
    attacker.login(EDITOR)
    stolen = attacker.http.cookies.get("mailer_admin")
    victim = Admin(web.url)
    victim.http.cookies.set("mailer_admin", stolen, domain="127.0.0.1", path="/")
    victim.login(EDITOR)
    assert victim.http.cookies.get("mailer_admin") != stolen
    assert attacker.get("/admin/editions").status_code == 303  # logged out


@pytest.mark.parametrize("target", [
    "//evil.example/admin", "///evil.example", "/\\evil.example", "\\\\evil.example",
    "https://evil.example/admin", "http:/evil.example", "/admin@evil.example/..",
    "javascript:alert(1)", "/admin/../\\evil.example", "/%2F%2Fevil.example", "/admin.evil",
    "/administrator", " /admin", "/admin\r\nLocation: https://evil.example", "evil.example",
])
def test_next_never_leads_off_the_admin(world, web, target) -> None:
    client = Admin(web.url)
    answer = client.login(EDITOR, next_=target)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin"
    # Nor does the login page hand an outside target on to its form.
    page = client.http.get("/admin/login", params={"next": target}).text
    assert 'name="next" value="/admin"' in page


def test_next_leads_back_to_the_page_asked_for(world, web) -> None:
    client = Admin(web.url)
    asked = f"/admin/editions/{world['edition_id']}?tab=articles"
    first = client.get(asked)
    login_url = first.headers["location"]
    page = client.get(login_url).text
    assert f'name="next" value="{asked}"' in page.replace("&amp;", "&")
    answer = client.http.post("/admin/login", data={
        "csrf": csrf_of(page), "email": EDITOR, "password": PASSWORD, "next": asked})
    assert answer.headers["location"] == asked


def test_cookie_flags_logout_and_expiry(world, web) -> None:
    client = Admin(web.url)
    answer = client.login(EDITOR)
    cookie = next(c for c in answer.headers.get_list("set-cookie")
                  if c.startswith("mailer_admin="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert "secure" not in flags  # plain http on loopback
    value = client.http.cookies.get("mailer_admin")

    client.post("/admin/logout")
    replay = httpx.get(f"{web.url}/admin/editions", cookies={"mailer_admin": value},
                       follow_redirects=False)
    assert replay.status_code == 303  # the server forgot the session, not just the browser

    client.login(EDITOR)
    with transaction() as session:
        session.execute(update(StaffSession).values(expires_at=utcnow() - dt.timedelta(
            seconds=1)))
    assert client.get("/admin/editions").status_code == 303


def test_cookies_are_secure_behind_https(world, stack) -> None:
    port = free_port()
    server = WebServer({**stack.env, "MAILER_BASE_URL": "https://newsletter.example.org"},
                       stack.tmp / f"web-{port}.log", port).start()
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False)
        form = client.get("/admin/login")
        login_cookie = form.headers["set-cookie"].lower()
        assert "secure" in login_cookie and "httponly" in login_cookie
        nonce = re.match(r"mailer_admin_login=([^;]+)", form.headers["set-cookie"]).group(1)
        # (A Secure cookie is not sent back over plain http: hand it over by hand.)
        answer = httpx.post(f"http://127.0.0.1:{port}/admin/login", data={
            "csrf": csrf_of(form.text), "email": EDITOR, "password": PASSWORD},
            headers={"Cookie": f"mailer_admin_login={nonce}"})
        session_cookie = next(c for c in answer.headers.get_list("set-cookie")
                              if c.startswith("__Host-mailer_admin="))
        flags = {part.strip().lower() for part in session_cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=lax", "path=/"} <= flags
        assert not any(f.startswith("domain") for f in flags)
    finally:
        server.stop()


def test_repeated_failed_logins_slow_the_guesser_not_the_account(world, web) -> None:
    """The answer to a wrong password is the same for every account; the account is never
    locked (the throttle is per address: tests/test_staff_security.py)."""
    client = Admin(web.url)
    unknown = client.login("nobody@example.org", "whatever it is")
    assert unknown.status_code == 401
    message = re.search(r'role="alert">(.*?)<', unknown.text).group(1)
    for _ in range(3):
        wrong = client.login(EDITOR, "not the password at all")
        assert wrong.status_code == 401
        assert re.search(r'role="alert">(.*?)<', wrong.text).group(1) == message
    assert client.login(EDITOR).status_code == 303
    with transaction() as session:
        reasons = [e.detail["reason"] for e in session.scalars(
            select(AuditEntry).where(AuditEntry.action == "login.failed")
            .order_by(AuditEntry.id))]
    assert reasons == ["unknown"] + ["wrong-password"] * 3
