"""The reader's preference page in Debian's Chromium (Playwright) on a phone, 375 px wide,
under the pages' strict Content-Security-Policy and without JavaScript: change the name,
the topics followed, ask for the data, join a list, leave everything; screenshots kept in
test-artifacts/."""

from __future__ import annotations

import pytest

from mailer.config import get_settings
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists import topics
from tests.support.factories import make_articles, stack_keys
from tests.support.subscribers import (
    events,
    make,
    settle_confirmation_tasks,  # noqa: F401
    subscriber,
)

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 375, "height": 740}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True, "java_script_enabled": False}


def _fits_the_screen(page) -> bool:  # type: ignore[no-untyped-def]
    # Measured with a script of the test's own: the page's scripts are off.
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_the_preference_page_on_a_phone(clean, web, worker, browser, artifacts) -> None:
    from mailer.subscribers.unsubscribe import preferences_url

    make_articles(4)  # News, CEP Events, Criminal Justice, Mental Health
    with transaction() as s:
        first = lists.default_list(s).id
        lists.create(s, slug="events", name="Event announcements",
                     list_id="events.example.org", description="What the association organises.")
    reader = make("phone.prefs@example.org", "confirmed", first_name="Pia")
    context = browser.new_context(**PHONE)
    page = context.new_page()
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text)
            if "Content Security Policy" in m.text else None)
    try:
        page.goto(preferences_url(reader, base_url=get_settings().base_url, keys=stack_keys()))
        assert page.title().startswith("Your preferences")
        assert page.get_by_label("First name").input_value() == "Pia"
        assert _fits_the_screen(page)
        page.screenshot(path=str(artifacts / f"preferences-phone-{clean.backend}.png"),
                        full_page=True)

        page.get_by_label("Last name").fill("Telefon")
        page.get_by_role("button", name="Save my name").click()
        page.wait_for_load_state()
        assert page.get_by_text("Your name is saved.").is_visible()
        sub = subscriber(reader.email)
        assert sub is not None and sub.last_name == "Telefon"

        # The topics: a box each, all ticked (everything); untick one and save.
        news = page.get_by_role("checkbox", name="News")
        assert news.is_checked() and page.get_by_role("checkbox", name="Mental Health").is_checked()
        news.uncheck()
        page.get_by_role("button", name="Save my topics").click()
        page.wait_for_load_state()
        assert page.get_by_text("Your topics for").is_visible()
        assert not page.get_by_role("checkbox", name="News").is_checked()
        with transaction() as s:
            held = lists.subscription(s, reader.id, first)
            assert held is not None and held.topics is not None
            assert topics.categories_for(s, first, held.topics) == {
                "CEP Events", "Criminal Justice", "Mental Health"}
        assert _fits_the_screen(page)
        page.screenshot(path=str(artifacts / f"preferences-topics-phone-{clean.backend}.png"),
                        full_page=True)

        page.get_by_role("button", name="Join Event announcements").click()
        page.wait_for_load_state()
        assert page.get_by_text("we mail a link").is_visible()
        assert page.get_by_text("waits for its confirmation").is_visible()

        page.get_by_role("button", name="Download my data").click()
        page.wait_for_load_state()
        assert page.get_by_role("heading", name="Please check your inbox").is_visible()
        assert _fits_the_screen(page)
        page.screenshot(path=str(artifacts / f"preferences-asked-phone-{clean.backend}.png"),
                        full_page=True)
        page.get_by_role("link", name="Back to your preferences").click()
        page.wait_for_load_state()
        page.get_by_role("button", name="Unsubscribe from everything").click()
        page.wait_for_load_state()
        assert page.get_by_text("You are unsubscribed").is_visible()
        with transaction() as s:
            assert {lists.subscription(s, reader.id, lst.id).status  # type: ignore[union-attr]
                    for lst in lists.all_lists(s)} == {"unsubscribed"}
        assert [k for k in events(reader.id) if k in (
            "name_changed", "topics_changed", "subscribed", "export_requested",
            "unsubscribed")] == [
            "subscribed", "name_changed", "topics_changed", "subscribed", "export_requested",
            "unsubscribed", "unsubscribed"]
        assert csp_errors == []
    finally:
        context.close()
