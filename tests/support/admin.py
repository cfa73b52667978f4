"""A staff member's browser without the browser: httpx against the real web server, with
the session cookie, the login form's token and each page's CSRF token."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

from mailer.db import transaction
from mailer.staff import accounts

PASSWORD = "a long enough test password"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def make_staff(email: str, role: str = "editor", password: str = PASSWORD) -> None:
    with transaction() as session:
        accounts.create(session, email=email, password=password, role=role, by="test")


#: Idle connections dropped after 2 s. uvicorn closes a keep-alive connection idle for 5 s,
#: httpx reuses one idle for up to 5 s by default: a request sent on a connection at the
#: moment the server closes it is reset ("Connection reset by peer"), a race of HTTP/1.1
#: keep-alive, not an answer of the app (browsers resend such a request on a new connection).
KEEP_ALIVE = httpx.Limits(keepalive_expiry=2.0)


class Admin:
    def __init__(self, base_url: str, ip: str | None = None) -> None:
        """``ip``: the client address the app sees (uvicorn takes X-Forwarded-For from a
        loopback peer, as from the reverse proxy in production)."""
        headers = {"X-Forwarded-For": ip} if ip else {}
        self.http = httpx.Client(base_url=base_url, follow_redirects=False, timeout=60,
                                 headers=headers, limits=KEEP_ALIVE)
        self._csrf: str | None = None

    def close(self) -> None:
        self.http.close()

    def login(self, email: str, password: str = PASSWORD, next_: str | None = None
              ) -> httpx.Response:
        """Log in through the form; ``next_`` is posted as it is (as a forged form would)."""
        form = self.http.get("/admin/login")
        token = csrf_of(form.text)
        data = {"csrf": token, "email": email, "password": password}
        if next_ is not None:
            data["next"] = next_
        self._csrf = None
        return self.http.post("/admin/login", data=data)

    @property
    def csrf(self) -> str:
        if self._csrf is None:
            self._csrf = csrf_of(self.http.get("/admin/ops").text)
        return self._csrf

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True,
             **kwargs: Any) -> httpx.Response:
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf", self.csrf)
        return self.http.post(path, data=data, **kwargs)

    def follow(self, response: httpx.Response) -> httpx.Response:
        """The page a 303 leads to (with its flash message)."""
        assert response.status_code == 303, (response.status_code, response.text[:500])
        return self.http.get(response.headers["location"])


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "no CSRF token on the page"
    return html.unescape(match.group(1))


def flash_of(page: str) -> str:
    match = re.search(r'<div class="flash (\w+)" role="status">(.*?)</div>', page, re.S)
    return f"{match.group(1)}: {html.unescape(match.group(2))}" if match else ""
