"""The bi-monthly send from the browser alone, in Debian's Chromium: log in, draft an
edition from the website's feed, preview it at desktop and phone width, send a test copy,
send it to a few hundred readers and watch the progress reach 100 % without reloading.
Screenshots are kept in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.articles.feeds import load
from mailer.articles.importer import import_feed
from mailer.config import ArticleSettings, IdentitySettings
from mailer.db import transaction
from tests.conftest import wait_for
from tests.support.admin import PASSWORD, make_staff
from tests.support.factories import make_subscribers
from tests.support.mail import parse

pytestmark = pytest.mark.browser

SITE = IdentitySettings().website_url  # the association's own site (feeds.load)
ROOT = Path(__file__).resolve().parents[1]
CEP_FEED = ROOT / "tests" / "fixtures" / "cep-feed.xml"  # copy of shared/fixtures
EDITOR = "editor@cep-probation.example.org"
READERS = 300


def test_the_bimonthly_send_from_the_browser(clean, web, worker, browser, artifacts) -> None:
    from mailer.config import OpsSettings
    from mailer.ops.workers import alive

    # The session's worker beats every few seconds; the tables and Redis were just emptied.
    wait_for(lambda: alive(ops=OpsSettings()), timeout=40, what="the worker's heartbeat")
    make_staff(EDITOR, "editor")
    readers = make_subscribers(READERS)
    with transaction() as session:
        import_feed(session, load(str(CEP_FEED), ArticleSettings(), website_url=SITE))
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error"
            and "Failed to load resource" not in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    # Our own pages and endpoints all answer; other hosts (the articles' images) are not
    # reachable from the test machine and do not count.
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400
            and r.url.startswith(web.url) and not r.url.endswith("/favicon.ico") else None)
    shot = lambda name: page.screenshot(  # noqa: E731
        path=str(artifacts / f"admin-{name}-{clean.backend}.png"), full_page=True)

    # Log in: /admin sends a stranger to the login page.
    page.goto(f"{web.url}/admin")
    assert page.url.startswith(f"{web.url}/admin/login")
    page.get_by_label("Email address").fill(EDITOR)
    page.get_by_label("Password").fill(PASSWORD)
    shot("1-login")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{web.url}/admin/editions")

    # Draft from the feed's articles (December 2025).
    page.get_by_label("Articles from").fill("2025-12-01")
    page.get_by_label("up to and including").fill("2025-12-31")
    shot("2-editions")
    page.get_by_role("button", name="Draft edition").click()
    page.wait_for_url(f"{web.url}/admin/editions/*")
    assert "drafted with" in page.get_by_role("status").inner_text()
    edition_url = page.url
    page.get_by_label("Subject", exact=True).fill("CEP Newsletter – December 2025")
    # The mail greets each reader itself ("Dear Maria,"): the intro starts with the news.
    page.get_by_label("Intro", exact=False).fill(
        "Here is what happened in probation this December.")
    page.get_by_role("button", name="Save").click()
    assert page.get_by_role("status").inner_text() == "Saved."
    assert page.locator("#ready").is_visible()  # "Ready to send to 300 reader(s)."
    assert f"{READERS}" in page.locator("#ready").inner_text()
    assert page.locator("#alerts").count() == 0  # all is well
    shot("3-edition")

    # Preview: the mail as sent, at desktop and at phone width.
    page.get_by_role("link", name="Preview").click()
    page.wait_for_url(f"{edition_url}/preview")
    for frame_id, width in (("desktop", 640), ("phone", 375)):
        frame = page.frame_locator(f"#{frame_id}")
        frame.get_by_text("Here is what happened in probation this December.").wait_for()
        assert page.locator(f"#{frame_id}").bounding_box()["width"] == width
        inner = page.locator(f"#{frame_id}").element_handle().content_frame()
        assert inner.evaluate("document.documentElement.scrollWidth") <= width
    assert page.locator("#subject").inner_text() == "CEP Newsletter – December 2025"
    shot("4-preview")

    # A test copy to the editor.
    page.goto(edition_url)
    page.get_by_role("button", name="Send test copy").click()
    said = page.get_by_role("status").inner_text()
    assert said.startswith("Test copy") and f"{EDITOR}: sent: 250" in said
    test_copy = wait_for(lambda: [m for m in clean.smtp.messages if EDITOR in m.rcpt_tos],
                         what="the test copy")
    assert parse(test_copy[0])["Subject"] == "[TEST] CEP Newsletter – December 2025"

    # Send now: the confirmation names the audience.
    page.get_by_role("link", name="Send now…").click()
    heading = page.get_by_role("heading", level=1).inner_text()
    assert heading == f"Send “CEP Newsletter – December 2025” to {READERS} readers now?"
    shot("5-confirm")
    page.get_by_role("button", name=f"Send to {READERS} readers now").click()
    page.wait_for_url(f"{edition_url}/progress")
    page.evaluate("window.stillTheSamePage = true")
    page.locator('[data-field="percent"]').filter(has_text="100").wait_for(timeout=120_000)
    page.locator('.state.sent[data-field="state"]').wait_for(timeout=30_000)
    assert page.evaluate("window.stillTheSamePage") is True  # updated without reloading
    assert page.locator('[data-count="sent"]').inner_text() == str(READERS)
    assert page.locator('[data-field="remaining"]').inner_text() == "0"
    assert page.locator("[data-bar]").evaluate("el => el.style.width") == "100%"
    page.wait_for_function("() => { const bar = document.querySelector('[data-bar]');"
                           " return bar.offsetWidth === bar.parentNode.clientWidth; }")
    shot("6-progress")

    delivered = {r for m in clean.smtp.messages for r in m.rcpt_tos}
    assert set(readers) <= delivered and len(delivered) == READERS + 1  # + the test copy
    assert problems == []  # no script error, no CSP block, no broken link of ours

    # The same pages on a phone: nothing runs off the screen.
    phone = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2,
                                is_mobile=True, has_touch=True,
                                storage_state=context.storage_state())
    small = phone.new_page()
    for path in ("/admin/editions", f"{edition_url[len(web.url):]}/progress"):
        small.goto(f"{web.url}{path}")
        assert small.evaluate("document.documentElement.scrollWidth <= "
                              "document.documentElement.clientWidth + 1"), path
    small.screenshot(path=str(artifacts / f"admin-7-progress-phone-{clean.backend}.png"),
                     full_page=True)
    phone.close()
    context.close()
