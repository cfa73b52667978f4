"""Server-rendered pages: one Jinja2 environment for the web and the mails."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse

from mailer.config import get_settings
from mailer.emails.render import jinja_env


def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    settings = get_settings()
    html = jinja_env().get_template(f"web/{name}").render(settings=settings, **context)
    return HTMLResponse(html, status_code=status_code, headers=_headers(settings.base_url))


def _headers(base_url: str) -> dict[str, str]:
    return {
        "X-Content-Type-Options": "nosniff",
        # Confirmation and unsubscribe tokens are in our URLs: never hand them on.
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        # No scripts at all; the pages' own <style>; forms post only back to us; and no
        # framing, so nobody can lay a Confirm or Unsubscribe button under a decoy.
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; "
            f"form-action 'self' {base_url}; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
    }
