"""Server-rendered pages: one Jinja2 environment for the web and the mails."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse

from mailer.config import get_settings
from mailer.emails import jinja_env


def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = jinja_env().get_template(f"web/{name}").render(settings=get_settings(), **context)
    return HTMLResponse(html, status_code=status_code, headers=_SECURITY_HEADERS)


_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
