"""Staff accounts: ``mailer staff``, argon2 passwords, logins, sessions that expire, and the
audit log every change writes."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import select, update
from typer.testing import CliRunner

from mailer.cli import app
from mailer.config import StaffSettings
from mailer.db import transaction, utcnow
from mailer.staff import accounts, sessions
from mailer.staff.models import AuditEntry, StaffSession, StaffUser

runner = CliRunner()
PASSWORD = "correct horse battery staple"
STAFF = StaffSettings()  # the defaults: 12 h sessions, 60 min idle, the login throttles


def mailer(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def user(email: str) -> StaffUser | None:
    with transaction() as session:
        return accounts.find(session, email)


def login(email: str, password: str) -> accounts.LoginResult:
    with transaction() as session:
        return accounts.authenticate(session, email=email, password=password, ip="192.0.2.1")


def actions() -> list[tuple[str, str]]:
    with transaction() as session:
        return [(a.actor, a.action) for a in session.scalars(select(AuditEntry)
                                                              .order_by(AuditEntry.id))]


def test_create_from_the_command_line_with_a_prompted_password(clean) -> None:
    made = mailer("staff", "create", "Editor@Example.org", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert made.exit_code == 0, made.output
    assert "Created editor editor@example.org" in made.output
    assert PASSWORD not in made.output  # the prompt hides what is typed
    stored = user("EDITOR@example.org")
    assert stored is not None and stored.role == "editor" and stored.active
    assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash

    viewer = mailer("staff", "create", "ops@example.org", "--role", "viewer",
                    "--password-stdin", input=f"{PASSWORD}\n")
    assert viewer.exit_code == 0, viewer.output
    assert user("ops@example.org").role == "viewer"

    listed = mailer("staff", "list")
    assert "editor@example.org" in listed.output and "viewer" in listed.output
    assert ("cli", "staff.create") in actions()


def test_bad_input_is_refused_and_nothing_is_stored(clean) -> None:
    short = mailer("staff", "create", "a@example.org", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    role = mailer("staff", "create", "a@example.org", "--role", "admin", "--password-stdin",
                  input=f"{PASSWORD}\n")
    assert role.exit_code == 1 and "editor, viewer" in role.output
    address = mailer("staff", "create", "not an address", "--password-stdin",
                     input=f"{PASSWORD}\n")
    assert address.exit_code == 1
    mismatch = mailer("staff", "create", "a@example.org", input=f"{PASSWORD}\nanother one!\n"
                      f"{PASSWORD}\n{PASSWORD}\n")
    assert mismatch.exit_code == 0 and "do not match" in mismatch.output.lower()
    again = mailer("staff", "create", "A@example.org", "--password-stdin", input=f"{PASSWORD}\n")
    assert again.exit_code == 1 and "already" in again.output
    with transaction() as session:
        assert [u.email for u in accounts.everyone(session)] == ["a@example.org"]


def test_wrong_passwords_never_lock_the_account(clean) -> None:
    """No lock-out a stranger could hold: the throttles in Redis slow down the address the
    guesses come from (tests/test_staff_security.py); the account itself opens with the
    right password after any number of wrong ones."""
    with transaction() as session:
        accounts.create(session, email="ed@example.org", password=PASSWORD, role="editor",
                        by="test")
    for n in range(12):
        assert login("ED@example.org", f"wrong password {n}").reason == "wrong-password"
    assert login("ed@example.org", PASSWORD).reason == "ok"
    logged = actions()
    assert logged.count(("ed@example.org", "login.failed")) == 12
    assert logged.count(("ed@example.org", "login")) == 1


def test_unknown_and_disabled_accounts_fail_like_a_wrong_password(clean) -> None:
    with transaction() as session:
        accounts.create(session, email="gone@example.org", password=PASSWORD, role="editor",
                        by="test")
    assert login("nobody@example.org", PASSWORD).reason == "unknown"
    assert login("x" * 400, PASSWORD).reason == "unknown"
    assert mailer("staff", "disable", "gone@example.org").exit_code == 0
    assert login("gone@example.org", PASSWORD).reason == "disabled"
    assert mailer("staff", "enable", "gone@example.org").exit_code == 0
    assert login("gone@example.org", PASSWORD).reason == "ok"
    assert ("nobody@example.org", "login.failed") in actions()


def test_cli_unlock_role_and_password(clean) -> None:
    from mailer.staff import throttle

    with transaction() as session:
        accounts.create(session, email="ed@example.org", password=PASSWORD, role="viewer",
                        by="test")
    for ip in ("192.0.2.1", "192.0.2.2"):
        for _ in range(6):
            throttle.record_failure(ip, "ed@example.org", STAFF)
    assert throttle.wait_seconds("192.0.2.1", "ed@example.org") > 0
    unlocked = mailer("staff", "unlock", "ed@example.org")
    assert unlocked.exit_code == 0 and "2 address(es)" in unlocked.output
    assert throttle.wait_seconds("192.0.2.1", "Ed@example.org") == 0
    assert throttle.wait_seconds("192.0.2.2", "ed@example.org") == 0
    assert mailer("staff", "role", "ed@example.org", "editor").exit_code == 0
    assert user("ed@example.org").role == "editor"
    assert mailer("staff", "role", "ed@example.org", "root").exit_code == 1
    changed = mailer("staff", "password", "ed@example.org", "--password-stdin",
                     input="a brand new password\n")
    assert changed.exit_code == 0, changed.output
    assert login("ed@example.org", PASSWORD).reason == "wrong-password"
    assert login("ed@example.org", "a brand new password").reason == "ok"
    assert mailer("staff", "unlock", "nobody@example.org").exit_code == 1


def test_sessions_are_stored_hashed_expire_and_end(clean) -> None:
    with transaction() as session:
        ed = accounts.create(session, email="ed@example.org", password=PASSWORD, role="editor",
                             by="test")
        cookie, row = sessions.start(session, ed, STAFF)
        other_cookie, _ = sessions.start(session, ed, STAFF)
    assert cookie != other_cookie
    with transaction() as session:
        stored = session.scalars(select(StaffSession.id)).all()
        assert hashlib.sha256(cookie.encode()).hexdigest() in stored
        assert cookie not in stored  # a stolen database logs nobody in
        live = sessions.load(session, cookie, STAFF)
        assert live is not None and live.user.email == "ed@example.org"
        assert sessions.csrf_ok(live.csrf_token, live.csrf_token)
        assert not sessions.csrf_ok(live.csrf_token, live.csrf_token[:-1] + "x")
        assert not sessions.csrf_ok(live.csrf_token, "")
        assert not sessions.csrf_ok(live.csrf_token, None)
        assert sessions.load(session, "made-up", STAFF) is None
        assert sessions.load(session, None, STAFF) is None
        sessions.end(session, other_cookie)
    with transaction() as session:
        assert sessions.load(session, other_cookie, STAFF) is None
        session.execute(update(StaffSession).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    with transaction() as session:
        assert sessions.load(session, cookie, STAFF) is None  # expired
        # A new login clears expired rows away.
        sessions.start(session, session.get(StaffUser, ed.id), STAFF)
    with transaction() as session:
        assert len(session.scalars(select(StaffSession)).all()) == 1


def test_a_new_password_or_disabling_ends_every_session(clean) -> None:
    with transaction() as session:
        ed = accounts.create(session, email="ed@example.org", password=PASSWORD, role="editor",
                             by="test")
        cookie, _ = sessions.start(session, ed, STAFF)
    assert mailer("staff", "password", "ed@example.org", "--password-stdin",
                  input="another password here\n").exit_code == 0
    with transaction() as session:
        assert sessions.load(session, cookie, STAFF) is None
        cookie, _ = sessions.start(session, session.get(StaffUser, ed.id), STAFF)
    assert mailer("staff", "disable", "ed@example.org").exit_code == 0
    with transaction() as session:
        assert sessions.load(session, cookie, STAFF) is None
