"""Staff confirm an unverified bounce in the admin (over HTTP against the real web server,
and once in Chromium): it then acts as a verified one would, once; confirming again does
nothing more; a viewer cannot; the audit log says who did it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailer.bounces.intake import receive
from mailer.db import transaction
from mailer.staff.models import AuditEntry
from tests.support.admin import PASSWORD, Admin, flash_of, make_staff
from tests.support.bounce_mail import (
    arf,
    bounces,
    dsn,
    events_of,
    make_reader,
    original_headers,
    status_of,
    suppressed,
)
from tests.support.bounce_reading import OURS
from tests.support.factories import BOUNCES, stack_keys
from tests.test_bounce_trust import resent

EDITOR, VIEWER = "editor@cep-probation.example.org", "viewer@cep-probation.example.org"
BOUNCE_ADDRESS = "bounces@bounces.cep-probation.example.org"


def unverified_hard(email: str) -> bytes:
    return dsn(to_verp=BOUNCE_ADDRESS, recipients=[
        (email, "failed", "5.1.1", f"550 5.1.1 <{email}>: Recipient address rejected: "
                                   "User unknown in local recipient table")])


def take_in(raw: bytes) -> int:
    with transaction() as session:
        [recorded] = receive(session, raw=raw, ours=OURS, source="imap",
                             bounces=BOUNCES, keys=stack_keys()).recorded
    assert recorded.action == "nothing: unverified"
    return recorded.bounce_id


@pytest.fixture
def staff(clean, web):  # type: ignore[no-untyped-def]
    make_staff(EDITOR, "editor")
    make_staff(VIEWER, "viewer")
    editor, viewer = Admin(web.url), Admin(web.url)
    assert editor.login(EDITOR).status_code == 303
    assert viewer.login(VIEWER).status_code == 303
    yield editor, viewer
    editor.close()
    viewer.close()


def test_an_editor_confirms_an_unverified_bounce_once(staff) -> None:
    editor, viewer = staff
    reader = make_reader("gone@example.net")
    other = make_reader("kept@example.net")
    raw = unverified_hard("gone@example.net")
    bounce_id = take_in(raw)
    replay_id = take_in(resent(raw))
    untouched_id = take_in(unverified_hard("kept@example.net"))

    page = editor.get("/admin/bounces", params={"trust": "unverified"}).text
    assert "Not tied to a message we sent" in page and "(no-token)" in page
    assert "gone@example.net" in page and f"/admin/bounces/{bounce_id}/confirm" in page
    assert "verified (0)" in page and "unverified (3)" in page
    # Viewers see the evidence but get no form, and cannot post one.
    seen = viewer.get("/admin/bounces", params={"trust": "unverified"}).text
    assert "Not tied to a message we sent" in seen and "/confirm" not in seen
    assert viewer.post(f"/admin/bounces/{bounce_id}/confirm").status_code == 403
    # Without the page's CSRF token nothing happens.
    assert editor.post(f"/admin/bounces/{bounce_id}/confirm", {"csrf": "forged"},
                       csrf=False).status_code == 403
    assert suppressed("gone@example.net") is None and events_of(reader) == []

    done = editor.post(f"/admin/bounces/{bounce_id}/confirm")
    assert flash_of(editor.follow(done).text) == f"ok: Bounce #{bounce_id} confirmed: suppressed."
    row = suppressed("gone@example.net")
    assert row is not None and row.reason == "hard_bounce"
    assert f"confirmed by {EDITOR}" in row.evidence
    assert [e.kind for e in events_of(reader)] == ["suppressed"]

    again = editor.post(f"/admin/bounces/{bounce_id}/confirm")
    assert "nothing to confirm" in flash_of(editor.follow(again).text)
    # The replay of the same DSN, confirmed too, is a repeat: it does nothing more.
    repeat = editor.post(f"/admin/bounces/{replay_id}/confirm")
    assert f"repeat of #{bounce_id}" in flash_of(editor.follow(repeat).text)
    assert [e.kind for e in events_of(reader)] == ["suppressed"]
    assert suppressed("kept@example.net") is None and events_of(other) == []

    by_id = {b.id: b for b in bounces()}
    assert (by_id[bounce_id].trust, by_id[bounce_id].confirmed_by) == ("confirmed", EDITOR)
    assert by_id[bounce_id].subscriber_id == reader
    assert by_id[replay_id].subscriber_id is None
    assert by_id[untouched_id].trust == "unverified"
    with transaction() as session:
        entries = [(a.actor, a.action, a.target) for a in session.scalars(
            select(AuditEntry).where(AuditEntry.action == "bounce.confirm")
            .order_by(AuditEntry.id))]
    assert entries == [(EDITOR, "bounce.confirm", f"bounce:{bounce_id}"),
                       (EDITOR, "bounce.confirm", f"bounce:{replay_id}")]
    listed = editor.get("/admin/bounces", params={"trust": "confirmed"}).text
    assert f"Confirmed by {EDITOR}" in listed


def test_a_confirmed_complaint_unsubscribes(staff) -> None:
    editor, _ = staff
    reader = make_reader("angry@example.net")
    fbl = "fbl@bounces.cep-probation.example.org"
    bounce_id = take_in(arf(to=fbl, reported_rcpt="angry@example.net", original=original_headers(
        "angry@example.net", "<made.up.1@cep-probation.example.org>")))
    assert status_of(reader) == "confirmed"

    editor.follow(editor.post(f"/admin/bounces/{bounce_id}/confirm"))

    assert status_of(reader) == "unsubscribed"
    assert suppressed("angry@example.net").reason == "complaint"


@pytest.mark.browser
def test_the_bounces_page_in_a_browser(staff, web, browser, artifacts, clean) -> None:
    make_reader("gone@example.net")
    bounce_id = take_in(unverified_hard("gone@example.net"))
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.goto(f"{web.url}/admin/login")
    page.get_by_label("Email address").fill(EDITOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{web.url}/admin/editions")
    page.goto(f"{web.url}/admin/bounces")
    page.get_by_label("Trust").select_option("unverified")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**trust=unverified**")
    row = page.locator(f"#bounce-{bounce_id}")
    assert row.locator(".trust-unverified").inner_text() == "unverified"
    page.screenshot(path=str(artifacts / f"admin-bounces-unverified-{clean.backend}.png"),
                    full_page=True)
    page.get_by_role("button", name="Confirm: act on it as a genuine hard bounce").click()
    page.wait_for_load_state()
    assert f"Bounce #{bounce_id} confirmed: suppressed." in page.locator(".flash").inner_text()
    assert suppressed("gone@example.net") is not None
    page.goto(f"{web.url}/admin/bounces?trust=confirmed")
    assert page.locator(f"#bounce-{bounce_id} .trust-confirmed").inner_text() == "confirmed"
    page.screenshot(path=str(artifacts / f"admin-bounces-confirmed-{clean.backend}.png"),
                    full_page=True)
    context.close()
