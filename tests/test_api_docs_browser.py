"""``/api/v1/docs`` in Debian's Chromium: Swagger UI renders the API's operations under the
page's strict CSP, and every request the page makes goes to this server."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.browser


def test_the_api_docs_render_without_a_request_elsewhere_or_a_csp_error(
        clean, web, browser, artifacts) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requested: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{web.url}/api/v1/docs")
        page.wait_for_selector('[data-path="/subscribers/{public_id}"]', timeout=30_000)
        # every operation of the description is on the page, each under its method
        spec = httpx.get(f"{web.url}/api/v1/openapi.json", timeout=10).json()
        for method in ("get", "post", "patch", "delete"):
            wanted = sum(method in ops for ops in spec["paths"].values())
            shown = page.locator(".opblock-summary-method", has_text=method.upper())
            assert wanted and shown.count() == wanted, (method, wanted, shown.count())
        page.screenshot(path=str(artifacts / "api-docs.png"), full_page=True)
    finally:
        context.close()
    assert requested and all(u.startswith(f"{web.url}/") or u.startswith("data:")
                             for u in requested), requested
    assert f"{web.url}/api/v1/openapi.json" in requested
    assert [e for e in errors if "Content Security Policy" in e] == [], errors
