"""The subscribe page in a real browser (Debian's Chromium through Playwright), on a
desktop and on a phone: fill, submit, see the answer; the error for a malformed address
beside its field; screenshots kept in test-artifacts/."""

from __future__ import annotations

import pytest

from tests.support.subscribers import (
    list_status,
    settle_confirmation_tasks,  # noqa: F401
    subscriber,
)

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 375, "height": 740}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


@pytest.fixture(params=["desktop", "phone"])
def page(request, browser, web):  # type: ignore[no-untyped-def]
    context = browser.new_context(**(PHONE if request.param == "phone" else DESKTOP))
    page = context.new_page()
    page.device = request.param
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.console_errors = errors
    yield page
    context.close()


def _fits_the_screen(page) -> bool:  # type: ignore[no-untyped-def]
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_subscribe_in_a_browser(clean, web, page, artifacts) -> None:
    page.goto(f"{web.url}/subscribe")
    assert page.title().startswith("Subscribe")
    # Every field is reachable through its label (what a screen reader announces).
    page.get_by_label("Email address").fill("browser.reader@example.org")
    page.get_by_label("First name").fill("Bea")
    page.get_by_label("Last name").fill("Brauser")
    page.get_by_label("Organisation").fill("Probation Service")
    page.get_by_label("Country").fill("Belgium")
    page.get_by_label("I agree", exact=False).check()
    assert _fits_the_screen(page)
    # The honeypot is out of sight and out of the tab order.
    honeypot = page.locator("#website")
    assert honeypot.bounding_box()["x"] + honeypot.bounding_box()["width"] < 0
    assert honeypot.get_attribute("tabindex") == "-1"
    page.screenshot(path=str(artifacts / f"subscribe-form-{page.device}-{clean.backend}.png"),
                    full_page=True)

    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Please check your inbox").is_visible()
    assert _fits_the_screen(page)
    page.screenshot(path=str(artifacts / f"subscribe-thanks-{page.device}-{clean.backend}.png"),
                    full_page=True)

    sub = subscriber("browser.reader@example.org")
    assert sub is not None and list_status("browser.reader@example.org") == "pending"
    assert (sub.first_name, sub.last_name, sub.country) == ("Bea", "Brauser", "Belgium")
    # The Content-Security-Policy blocks nothing the page needs.
    assert [e for e in page.console_errors if "Content Security Policy" in e] == []


def test_a_malformed_address_is_shown_beside_its_field(clean, web, page, artifacts) -> None:
    page.goto(f"{web.url}/subscribe")
    page.get_by_label("Email address").fill("anna.example.org")
    page.get_by_label("First name").fill("Anna")
    page.get_by_label("I agree", exact=False).check()
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_load_state()

    field = page.get_by_label("Email address")
    assert field.get_attribute("aria-invalid") == "true"
    assert field.input_value() == "anna.example.org"  # nothing typed is lost
    assert page.get_by_label("First name").input_value() == "Anna"
    assert page.get_by_label("I agree", exact=False).is_checked()
    error = page.locator("#email-error")
    assert error.is_visible() and "not a valid email address" in error.inner_text()
    assert field.get_attribute("aria-describedby") == "email-error"
    # Beside the field: the message sits right under the input, above the next label.
    field_box, error_box = field.bounding_box(), error.bounding_box()
    next_label = page.locator("label[for=first_name]").bounding_box()
    assert field_box["y"] < error_box["y"] < next_label["y"]
    assert _fits_the_screen(page)
    page.screenshot(path=str(artifacts / f"subscribe-error-{page.device}-{clean.backend}.png"),
                    full_page=True)
    assert subscriber("anna@example.org") is None


def test_the_consent_box_must_be_ticked(clean, web, page) -> None:
    page.goto(f"{web.url}/subscribe")
    page.get_by_label("Email address").fill("unticked@example.org")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_load_state()
    assert page.locator("#consent-error").is_visible()
    assert page.get_by_label("Email address").input_value() == "unticked@example.org"
    assert subscriber("unticked@example.org") is None


def test_the_snippet_for_the_website_posts_to_the_same_endpoint(clean, web, page,
                                                                artifacts) -> None:
    page.goto(f"{web.url}/subscribe/embed")
    code = page.locator("pre code").inner_text()
    assert f'action="{web.url}/subscribe"' in code and 'name="website"' in code
    for name in ("email", "first_name", "last_name", "organisation", "country", "consent"):
        assert f'name="{name}"' in code
    # The preview is the snippet itself: fill it in like a visitor of the website would.
    page.get_by_label("Email address").fill("from.website@example.org")
    page.get_by_label("I agree", exact=False).check()
    page.screenshot(path=str(artifacts / f"embed-{page.device}-{clean.backend}.png"),
                    full_page=True)
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Please check your inbox").is_visible()
    sub = subscriber("from.website@example.org")
    assert sub is not None and sub.source == "website-embed"
