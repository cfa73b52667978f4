"""Staff logins against a stranger: throttled per address (never a lock-out the stranger
could hold), sessions that end when left idle, and the optional second factor (TOTP with
recovery codes). Over HTTP against the real web app; the browser's view is in
test_staff_browser.py."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator

import httpx
import pyotp
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from mailer.cli import app
from mailer.db import transaction, utcnow
from mailer.staff.models import AuditEntry, StaffRecoveryCode, StaffSession, StaffUser
from tests.support.admin import Admin, csrf_of, make_staff
from tests.support.processes import WebServer, free_port

EDITOR = "ed@example.org"
THROTTLE = {
    "MAILER_LOGIN_FREE_ATTEMPTS_PER_ACCOUNT_AND_IP": "3",
    "MAILER_LOGIN_FREE_ATTEMPTS_PER_IP": "6",
    "MAILER_LOGIN_BACKOFF_SECONDS": "2",
    "MAILER_LOGIN_BACKOFF_MAX_SECONDS": "16",
}


@pytest.fixture
def strict(clean) -> Iterator[WebServer]:
    """A web server whose throttles start early and wait seconds, not minutes."""
    server = WebServer({**clean.env, **THROTTLE}, clean.tmp / "strict-login.log",
                       free_port()).start()
    make_staff(EDITOR, "editor")
    make_staff("ops@example.org", "viewer")
    try:
        yield server
    finally:
        server.stop()


def _alert(page: str) -> str:
    match = re.search(r'role="alert">(.*?)<', page, re.S)
    return match.group(1) if match else ""


# --- throttling -----------------------------------------------------------------------------------


def test_guesses_from_one_address_back_off_and_nobody_else_waits(strict) -> None:
    guesser = Admin(strict.url, ip="203.0.113.7")
    answers = [guesser.login(EDITOR, f"guess number {n}") for n in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 401]
    # The third failure for this account from this address: it waits 2 s, then 4, 8…
    held = guesser.login(EDITOR)  # even the right password is not checked now
    assert held.status_code == 429 and int(held.headers["retry-after"]) in (1, 2)
    assert "Too many failed logins from your network" in _alert(held.text)
    assert "mailer_admin=" not in held.headers.get("set-cookie", "")

    # The staff member, from their own address, is not held up at all.
    owner = Admin(strict.url, ip="198.51.100.20")
    assert owner.login(EDITOR).status_code == 303
    assert owner.get("/admin/editions").status_code == 200

    # After the wait, one more guess; it fails, and the wait doubles.
    time.sleep(2.1)
    assert guesser.login(EDITOR, "guess number 4").status_code == 401
    again = guesser.login(EDITOR)
    assert again.status_code == 429 and int(again.headers["retry-after"]) in (3, 4)
    time.sleep(4.1)
    # The right password, once the wait is over, logs in, and forgets this pair's failures.
    assert guesser.login(EDITOR).status_code == 303
    assert guesser.login(EDITOR, "one more slip").status_code == 401
    with transaction() as session:
        throttled = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "login.failed")).all()
    assert {e.detail["ip"] for e in throttled} == {"203.0.113.7"}


def test_one_address_trying_many_accounts_is_held_up_other_addresses_are_not(strict) -> None:
    sprayer = Admin(strict.url, ip="203.0.113.50")
    for n in range(6):  # one guess each, for six accounts: the per-address limit
        assert sprayer.login(f"person{n}@example.org", "Winter2026!").status_code == 401
    held = sprayer.login("ops@example.org")
    assert held.status_code == 429
    neighbour = Admin(strict.url, ip="203.0.113.51")
    assert neighbour.login("ops@example.org").status_code == 303


def test_the_answer_does_not_tell_which_accounts_exist(strict) -> None:
    """Unknown addresses are throttled exactly like real ones."""
    known, unknown = Admin(strict.url, ip="203.0.113.60"), Admin(strict.url, ip="203.0.113.61")
    for _ in range(3):
        a, b = known.login(EDITOR, "wrong"), unknown.login("nobody@example.org", "wrong")
        assert (a.status_code, _alert(a.text)) == (b.status_code, _alert(b.text))
    a, b = known.login(EDITOR, "wrong"), unknown.login("nobody@example.org", "wrong")
    assert a.status_code == b.status_code == 429
    assert _alert(a.text).split(" Try again")[0] == _alert(b.text).split(" Try again")[0]


# --- idle sessions ------------------------------------------------------------------------------


def _age_session(minutes: float) -> None:
    with transaction() as session:
        session.execute(update(StaffSession).values(
            last_seen_at=utcnow() - dt.timedelta(minutes=minutes)))


def test_a_session_left_idle_ends_and_one_in_use_slides_on(clean, web) -> None:
    make_staff(EDITOR, "editor")
    client = Admin(web.url)
    assert client.login(EDITOR).status_code == 303
    # 59 minutes idle (the default allows 60): still in, and the clock starts again.
    _age_session(59)
    assert client.get("/admin/editions").status_code == 200
    with transaction() as session:
        seen = session.scalars(select(StaffSession.last_seen_at)).one()
    assert utcnow() - seen < dt.timedelta(minutes=1)
    # 61 minutes idle: over. The page sends to the login, and the session is gone for good.
    _age_session(61)
    answer = client.get("/admin/editions")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/login")
    with transaction() as session:
        assert session.scalars(select(StaffSession)).all() == []


def test_the_idle_limit_is_a_setting(clean) -> None:
    server = WebServer({**clean.env, "MAILER_SESSION_IDLE_MINUTES": "5"},
                       clean.tmp / "idle-web.log", free_port()).start()
    try:
        make_staff(EDITOR, "editor")
        client = Admin(server.url)
        assert client.login(EDITOR).status_code == 303
        _age_session(4)
        assert client.get("/admin/editions").status_code == 200
        _age_session(6)
        assert client.get("/admin/editions").status_code == 303
    finally:
        server.stop()


# --- the second factor --------------------------------------------------------------------------


def _secret_of(page: str) -> str:
    return re.search(r'name="secret" value="([A-Z2-7]{32})"', page).group(1)


def _enrol(client: Admin) -> tuple[str, list[str]]:
    """Set up TOTP through the pages; (the secret, the recovery codes)."""
    page = client.get("/admin/account/totp")
    assert page.status_code == 200 and "<svg" in page.text
    secret = _secret_of(page.text)
    form = {"secret": secret,
            "secret_token": re.search(r'name="secret_token" value="([^"]+)"', page.text)[1]}
    wrong = client.post("/admin/account/totp", {**form, "code": "000000"})
    assert wrong.status_code == 422 and "not the one the app shows" in wrong.text
    done = client.post("/admin/account/totp", {**form, "code": pyotp.TOTP(secret).now()})
    assert done.status_code == 200
    codes = re.findall(r"<li>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</li>", done.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    return secret, codes


def _code_step(client: Admin, email: str = EDITOR) -> httpx.Response:
    """Log in with the password; the page that asks for the code."""
    answer = client.login(email)
    assert answer.status_code == 200 and 'action="/admin/login/code"' in answer.text, \
        answer.status_code
    assert "mailer_admin=" not in answer.headers.get("set-cookie", "")  # no session yet
    client.code_csrf = csrf_of(answer.text)  # type: ignore[attr-defined]
    return answer


def _send_code(client: Admin, code: str) -> httpx.Response:
    return client.http.post("/admin/login/code", data={
        "csrf": client.code_csrf, "code": code, "next": "/admin/editions"})  # type: ignore[attr-defined]


def _later_code(secret: str, steps: int = 1) -> str:
    """The code of a coming time step (accepted: clocks drift), so that a test need not
    wait 30 s for a code that was not used yet."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps)


def test_enrol_then_log_in_with_a_code_once(clean, web) -> None:
    make_staff(EDITOR, "editor")
    client = Admin(web.url)
    assert client.login(EDITOR).status_code == 303
    secret, codes = _enrol(client)
    with transaction() as session:
        user = session.scalars(select(StaffUser)).one()
        assert user.totp_secret and secret not in user.totp_secret  # stored encrypted
        hashes = session.scalars(select(StaffRecoveryCode.code_hash)).all()
        assert len(hashes) == 10 and not set(codes) & set(hashes)
    assert "On" in client.get("/admin/account").text

    client.post("/admin/logout", {})
    fresh = Admin(web.url)
    _code_step(fresh)
    assert fresh.get("/admin/editions").status_code == 303  # the password alone: not in
    assert _send_code(fresh, "123456").status_code == 401
    code = _later_code(secret)
    answer = _send_code(fresh, code)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/editions"
    assert fresh.get("/admin/editions").status_code == 200

    # The same code again, in another browser: refused (seen over a shoulder, replayed).
    other = Admin(web.url)
    _code_step(other)
    assert _send_code(other, code).status_code == 401
    assert _send_code(other, _later_code(secret, 0)).status_code == 401  # an older step
    with transaction() as session:
        logins = [e.detail for e in session.scalars(select(AuditEntry).where(
            AuditEntry.action == "login").order_by(AuditEntry.id))]
        failures = [e.detail["reason"] for e in session.scalars(select(AuditEntry).where(
            AuditEntry.action == "login.failed"))]
        assert ("staff.totp.enable" in session.scalars(select(AuditEntry.action)).all())
    assert logins[-1]["second_factor"] == "totp"
    assert failures == ["wrong-code"] * 3


def test_a_recovery_code_logs_in_once(clean, web) -> None:
    make_staff(EDITOR, "editor")
    client = Admin(web.url)
    client.login(EDITOR)
    _, codes = _enrol(client)
    first = Admin(web.url)
    _code_step(first)
    assert _send_code(first, codes[3].upper().replace("-", " ")).status_code == 303
    second = Admin(web.url)
    _code_step(second)
    assert _send_code(second, codes[3]).status_code == 401  # used up
    assert _send_code(second, codes[4]).status_code == 303
    assert "8 of 10 recovery codes left" in " ".join(second.get("/admin/account").text.split())
    with transaction() as session:
        used = session.scalars(select(StaffRecoveryCode).where(
            StaffRecoveryCode.used_at.is_not(None))).all()
    assert len(used) == 2


def test_wrong_codes_are_throttled_like_wrong_passwords(strict) -> None:
    client = Admin(strict.url, ip="203.0.113.90")
    assert client.login(EDITOR).status_code == 303
    secret, _ = _enrol(client)
    guesser = Admin(strict.url, ip="203.0.113.91")
    _code_step(guesser)
    for n in range(3):
        assert _send_code(guesser, f"{n:06d}").status_code == 401
    held = _send_code(guesser, _later_code(secret))
    assert held.status_code == 429 and "Too many failed logins" in held.text
    owner = Admin(strict.url, ip="198.51.100.91")  # the owner, elsewhere, is not held up
    _code_step(owner)
    assert _send_code(owner, _later_code(secret)).status_code == 303


def test_the_code_step_needs_its_own_cookie_and_token(clean, web) -> None:
    make_staff(EDITOR, "editor")
    client = Admin(web.url)
    client.login(EDITOR)
    secret, _ = _enrol(client)
    stranger = httpx.post(f"{web.url}/admin/login/code",
                          data={"code": _later_code(secret), "csrf": "x"})
    assert stranger.status_code == 403
    victim = Admin(web.url)
    _code_step(victim)
    forged = victim.http.post("/admin/login/code", data={"code": _later_code(secret),
                                                         "csrf": "forged"})
    assert forged.status_code == 403
    assert victim.get("/admin/editions").status_code == 303


def test_turning_it_off_takes_a_code_and_the_cli_resets_a_lost_device(clean, web) -> None:
    make_staff(EDITOR, "editor")
    client = Admin(web.url)
    client.login(EDITOR)
    secret, _ = _enrol(client)
    refused = client.post("/admin/account/totp/off", {"code": "000000"})
    assert "stays on" in client.follow(refused).text
    off = client.post("/admin/account/totp/off", {"code": _later_code(secret)})
    assert "is off" in client.follow(off).text
    assert Admin(web.url).login(EDITOR).status_code == 303  # the password alone again

    client.login(EDITOR)
    _enrol(client)
    runner = CliRunner()
    reset = runner.invoke(app, ["staff", "totp", "reset", EDITOR], catch_exceptions=False)
    assert reset.exit_code == 0 and "is off" in reset.output
    assert client.get("/admin/editions").status_code == 303  # its sessions ended
    assert Admin(web.url).login(EDITOR).status_code == 303
    listed = runner.invoke(app, ["staff", "list"], catch_exceptions=False)
    assert "TOTP" not in listed.output
    again = runner.invoke(app, ["staff", "totp", "reset", EDITOR], catch_exceptions=False)
    assert "nothing changed" in again.output
    with transaction() as session:
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert session.scalars(select(StaffRecoveryCode)).all() == []
    assert actions.count("staff.totp.enable") == 2 and actions.count("staff.totp.disable") == 2


def test_the_account_pages_check_their_csrf_token(clean, web) -> None:
    make_staff(EDITOR, "editor")
    client = Admin(web.url)
    client.login(EDITOR)
    page = client.get("/admin/account/totp").text
    secret = _secret_of(page)
    token = re.search(r'name="secret_token" value="([^"]+)"', page)[1]
    for path in ("/admin/account/totp", "/admin/account/totp/off"):
        answer = client.post(path, {"secret": secret, "secret_token": token,
                                    "code": pyotp.TOTP(secret).now(), "csrf": "forged"},
                             csrf=False)
        assert answer.status_code == 403
    with transaction() as session:
        assert session.scalars(select(StaffUser.totp_secret)).one() is None
