"""The login and the second factor's setup in Debian's Chromium: log in, set up TOTP from
the QR code's page (drawn on our server: the browser asks no other host for anything),
keep the recovery codes, log out, log in with a code. Screenshots in test-artifacts/."""

from __future__ import annotations

import time

import pyotp
import pytest

from tests.support.admin import PASSWORD, make_staff

pytestmark = pytest.mark.browser

EDITOR = "totp-editor@example.org"


def test_set_up_totp_and_log_in_with_it_in_the_browser(clean, web, browser, artifacts) -> None:
    make_staff(EDITOR, "editor")
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    asked: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 500
            else None)
    shot = lambda name: page.screenshot(  # noqa: E731
        path=str(artifacts / f"staff-{name}-{clean.backend}.png"), full_page=True)

    page.goto(f"{web.url}/admin/login")
    page.get_by_label("Email address").fill(EDITOR)
    page.get_by_label("Password").fill(PASSWORD)
    shot("1-login")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{web.url}/admin/editions")

    # The account page, from the address in the top bar.
    page.get_by_role("link", name=EDITOR).click()
    page.wait_for_url(f"{web.url}/admin/account")
    assert "Off." in page.inner_text("main")
    page.get_by_role("link", name="Set up two-factor authentication").click()
    page.wait_for_url(f"{web.url}/admin/account/totp")
    qr = page.locator(".qr svg")
    assert qr.is_visible()
    box = qr.bounding_box()
    assert box and box["width"] >= 120 and abs(box["width"] - box["height"]) < 2
    secret = page.inner_text("#totp-key").replace(" ", "")
    assert len(secret) == 32
    shot("2-totp-setup")

    page.get_by_label("Code from the app").fill("000000")
    page.get_by_role("button", name="Turn on").click()
    assert "not the one the app shows" in page.inner_text("[role=alert]")
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on").click()
    page.wait_for_selector("ul.recovery-codes")
    codes = page.locator("ul.recovery-codes li").all_inner_texts()
    assert len(codes) == 10
    shot("3-recovery-codes")

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{web.url}/admin/login")
    page.get_by_label("Email address").fill(EDITOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("text=Your code")
    shot("4-login-code")
    page.get_by_label("The six-digit code from your authenticator app").fill(
        pyotp.TOTP(secret).at(time.time() + 30))  # the next step: the last one was used
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{web.url}/admin/editions")
    page.goto(f"{web.url}/admin/account")
    assert "On" in page.inner_text("main") and "10 of 10 recovery codes" in " ".join(
        page.inner_text("main").split())

    others = [url for url in asked if not url.startswith(web.url)]
    assert others == [], others  # no third-party request: the QR code is ours
    assert problems == []
    context.close()
