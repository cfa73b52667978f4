"""The admin's Webhooks page in Debian's Chromium: an editor adds an endpoint (a private
address refused on the page first), sees its secret once, a reader's confirmation reaches
a real receiver signed with that secret, the delivery log shows the reply code and the
latency, Redeliver sends the same event again, and Remove stops it. Screenshots in
test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from mailer.audit import AuditEntry
from mailer.db import transaction
from mailer.webhooks.models import WebhookEndpoint
from tests.conftest import wait_for
from tests.support import subscribers as readers
from tests.support.admin import PASSWORD, make_staff
from tests.support.receiver import Receiver

pytestmark = pytest.mark.browser

EDITOR = "hooks-editor@example.org"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


def test_an_editor_adds_watches_redelivers_and_removes_an_endpoint(
        clean, web, worker, browser, artifacts, receiver) -> None:
    make_staff(EDITOR, "editor")
    page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 500
            else None)
    shot = lambda name: page.screenshot(  # noqa: E731
        path=str(artifacts / f"webhooks-{name}-{clean.backend}.png"), full_page=True)

    page.goto(f"{web.url}/admin/login")
    page.get_by_label("Email address").fill(EDITOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{web.url}/admin/editions")
    page.get_by_role("link", name="Webhooks").click()
    page.wait_for_url(f"{web.url}/admin/webhooks")
    assert "No endpoint yet" in page.inner_text("#endpoints")

    # A private address: refused on the page, what was typed kept.
    page.get_by_label("URL").fill("http://10.20.30.40/hooks")
    page.get_by_label("subscriber.confirmed").check()
    page.get_by_role("button", name="Add endpoint").click()
    assert "is a private address" in page.inner_text("[role=alert]")
    assert page.get_by_label("subscriber.confirmed").is_checked()
    assert page.input_value("#url") == "http://10.20.30.40/hooks"

    page.get_by_label("URL").fill(receiver.url)
    page.get_by_label("What receives them").fill("the CRM")
    page.get_by_role("button", name="Add endpoint").click()
    page.wait_for_selector("#made")
    secret = page.input_value("#secret-value")
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    assert "shown only this once" in page.inner_text("#made")
    shot("1-added")

    reader = readers.make("lena@example.org", "confirmed")  # the session's worker posts it
    wait_for(lambda: receiver.count() >= 1, what="the first post")
    [payload] = receiver.verified(secret)
    assert payload["type"] == "subscriber.confirmed"
    assert payload["data"]["subscriber"]["id"] == reader.public_id

    page.goto(f"{web.url}/admin/webhooks")  # the secret is never shown again
    assert secret not in page.content() and page.locator("#made").count() == 0
    page.get_by_role("link", name=receiver.url).click()
    wait_for(lambda: (page.reload(), "delivered" in page.inner_text("#deliveries"))[1],
             what="the delivery shown as delivered")
    log = page.inner_text("#attempts")
    assert "subscriber.confirmed" in log and "200" in log and re.search(r"\d+ ms", log)
    assert receiver.message_ids()[0] in page.inner_text("#deliveries")
    shot("2-log")

    page.get_by_role("button", name="Redeliver").click()
    page.wait_for_selector("text=is queued again")
    wait_for(lambda: receiver.count() >= 2, what="the redelivery")
    assert len(set(receiver.message_ids())) == 1  # the same event, the same webhook-id
    assert len(receiver.verified(secret)) == 2

    page.get_by_role("button", name="Remove endpoint").click()
    page.wait_for_selector("text=it hears of nothing more")
    assert "No endpoint yet" in page.inner_text("#endpoints")
    shot("3-removed")
    with transaction() as session:
        assert session.scalars(select(WebhookEndpoint)).all() == []
        assert [(e.action, e.actor) for e in session.scalars(select(AuditEntry).where(
            AuditEntry.action.like("webhook.%")).order_by(AuditEntry.id))] == [
            ("webhook.add", EDITOR), ("webhook.redeliver", EDITOR), ("webhook.remove", EDITOR)]
    assert problems == []


def test_viewers_have_no_webhooks_page(clean, web, browser) -> None:
    make_staff("hooks-viewer@example.org", "viewer")
    page = browser.new_context().new_page()
    page.goto(f"{web.url}/admin/login")
    page.get_by_label("Email address").fill("hooks-viewer@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    assert page.get_by_role("link", name="Webhooks").count() == 0
    answer = page.goto(f"{web.url}/admin/webhooks")
    assert answer is not None and answer.status == 403
