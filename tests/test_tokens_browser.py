"""The admin's API tokens page in Debian's Chromium: an editor makes a token (shown once,
and it works against /api/v1), sees it listed without its value, a wrong name is refused
on the page, and revoking it stops it at once. Screenshots in test-artifacts/."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select

from mailer.api_tokens.models import ApiToken
from mailer.audit import AuditEntry
from mailer.db import transaction
from tests.support.admin import PASSWORD, make_staff

pytestmark = pytest.mark.browser

EDITOR = "tokens-editor@example.org"


def test_an_editor_makes_sees_once_and_revokes_a_token(clean, web, browser, artifacts) -> None:
    make_staff(EDITOR, "editor")
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 500
            else None)
    shot = lambda name: page.screenshot(  # noqa: E731
        path=str(artifacts / f"tokens-{name}-{clean.backend}.png"), full_page=True)

    page.goto(f"{web.url}/admin/login")
    page.get_by_label("Email address").fill(EDITOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{web.url}/admin/editions")
    page.get_by_role("link", name="API tokens").click()
    page.wait_for_url(f"{web.url}/admin/tokens")
    assert "No token yet" in page.inner_text("#tokens")

    # A wrong name: refused on the page, what was typed kept.
    page.get_by_label("Name (who holds it)").fill("Website Form")
    page.get_by_label("subscribers:read").check()
    page.evaluate("document.getElementById('name').removeAttribute('pattern')")
    page.get_by_role("button", name="Create token").click()
    assert "lower-case letters" in page.inner_text("[role=alert]")
    assert page.get_by_label("subscribers:read").is_checked()

    page.get_by_label("Name (who holds it)").fill("website-form")
    page.get_by_label("subscribers:write").check()
    page.get_by_label("Valid for (days)").fill("30")
    page.get_by_role("button", name="Create token").click()
    page.wait_for_selector("#made")
    value = page.input_value("#token-value")
    assert re.fullmatch(r"mlr_[A-Za-z0-9_-]{43}", value)
    assert "shown only this once" in page.inner_text("#made")
    row = page.inner_text("#token-website-form")
    assert "subscribers:read, subscribers:write" in row and value[:8] in row
    shot("1-made")

    api = httpx.Client(base_url=f"{web.url}/api/v1",
                       headers={"Authorization": f"Bearer {value}"}, timeout=15)
    assert api.get("/subscribers").status_code == 200

    page.goto(f"{web.url}/admin/tokens")  # never shown again
    assert value not in page.content() and page.locator("#made").count() == 0
    with transaction() as session:
        token = session.scalars(select(ApiToken)).one()
        assert token.created_by == EDITOR and token.expires_at is not None
        assert value not in (token.token_hash, token.hint)

    page.locator("#token-website-form").get_by_role("button", name="Revoke").click()
    page.wait_for_selector("text=revoked: it is refused from its next request on")
    assert "revoked" in page.inner_text("#token-website-form")
    shot("2-revoked")
    assert api.get("/subscribers").status_code == 401
    with transaction() as session:
        assert [(e.action, e.actor) for e in session.scalars(select(AuditEntry).where(
            AuditEntry.action.like("api_token.%")).order_by(AuditEntry.id))] == [
            ("api_token.create", EDITOR), ("api_token.revoke", EDITOR)]
    assert problems == []


def test_viewers_have_no_tokens_page(clean, web, browser) -> None:
    make_staff("tokens-viewer@example.org", "viewer")
    page = browser.new_context().new_page()
    page.goto(f"{web.url}/admin/login")
    page.get_by_label("Email address").fill("tokens-viewer@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    assert page.get_by_role("link", name="API tokens").count() == 0
    answer = page.goto(f"{web.url}/admin/tokens")
    assert answer is not None and answer.status == 403
