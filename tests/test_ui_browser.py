"""What the eye sees, in Debian's Chromium: the consent box beside its text in the sign-up
form and in the embed snippet's preview, and the progress page's clock in the
association's zone on a 24-hour clock whatever the browser's own locale and zone.
Screenshots in test-artifacts/."""

from __future__ import annotations

import re

import pytest

from tests.support.admin import Admin, make_staff
from tests.support.factories import make_edition

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 375, "height": 740}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


@pytest.fixture(params=["desktop", "phone"])
def page(request, browser, web):  # type: ignore[no-untyped-def]
    context = browser.new_context(**(PHONE if request.param == "phone" else DESKTOP))
    page = context.new_page()
    page.device = request.param
    yield page
    context.close()


def _beside(page, box_selector: str, label_selector: str) -> None:  # type: ignore[no-untyped-def]
    """The box on the first line of its label's text, to its left; the text in a normal
    weight (whether the box sits inside the label or beside it)."""
    box = page.locator(box_selector).bounding_box()
    first_line = page.locator(label_selector).evaluate("""label => {
        const walker = document.createTreeWalker(label, NodeFilter.SHOW_TEXT,
            {acceptNode: n => n.textContent.trim() ? NodeFilter.FILTER_ACCEPT
                                                   : NodeFilter.FILTER_REJECT});
        const text = walker.nextNode();
        const range = document.createRange();
        range.selectNodeContents(text);
        const r = range.getClientRects()[0];
        return {x: r.x, y: r.y, height: r.height,
                weight: getComputedStyle(text.parentElement).fontWeight};
    }""")
    assert box["x"] + box["width"] <= first_line["x"] + 1, (box, first_line)
    # The box's middle is within the first line of the text, not above it.
    middle = box["y"] + box["height"] / 2
    assert first_line["y"] <= middle <= first_line["y"] + first_line["height"], (box, first_line)
    assert int(first_line["weight"]) <= 500, first_line


@pytest.mark.parametrize("where, box, label", [
    ("/subscribe", "#consent", "label[for=consent]"),
    ("/subscribe/embed", "#cep-nl-consent", "label[for=cep-nl-consent]"),
])
def test_the_consent_box_is_beside_its_text(clean, web, page, artifacts, where: str, box: str,
                                           label: str) -> None:
    page.goto(f"{web.url}{where}")
    _beside(page, box, label)
    page.locator(label).click()  # the text is the box's label: a click ticks it
    assert page.locator(box).is_checked()
    name = where.strip("/").replace("/", "-")
    page.locator(box).screenshot(path=str(artifacts / f"consent-{name}-{page.device}-"
                                                      f"{clean.backend}.png"))
    page.screenshot(path=str(artifacts / f"consent-{name}-page-{page.device}-"
                                         f"{clean.backend}.png"), full_page=True)


def test_the_progress_page_clock_ignores_the_browsers_locale(clean, web, browser,
                                                             artifacts) -> None:
    make_staff("editor@example.org")
    admin = Admin(web.url)
    assert admin.login("editor@example.org").status_code == 303
    edition_id = make_edition()
    # A browser in New York with a 12-hour locale.
    context = browser.new_context(locale="en-US", timezone_id="America/New_York", **DESKTOP)
    context.add_cookies([{"name": name, "value": value, "url": web.url}
                         for name, value in admin.http.cookies.items()])
    page = context.new_page()
    page.goto(f"{web.url}/admin/editions/{edition_id}/progress")
    updated = page.locator('[data-field="updated"]')
    # The first answer of progress.json rewrites the line; wait for a second one.
    first = updated.inner_text()
    page.wait_for_function("(before) => document.querySelector('[data-field=\"updated\"]')"
                           ".textContent !== before", arg=first, timeout=10_000)
    said = updated.inner_text()
    assert re.fullmatch(r"Last update \d\d:\d\d:\d\d CES?T\.", said), said
    assert "AM" not in said and "PM" not in said
    page.screenshot(path=str(artifacts / f"progress-clock-{clean.backend}.png"), full_page=True)
    context.close()
    admin.close()
