"""Logging in and out, who is asking, and the checks every admin request passes.

- The session cookie is HttpOnly, SameSite=Lax, Secure (and ``__Host-``) when the site is
  served over https; its value is new at every login (no session fixation).
- Every form carries the session's CSRF token; the login form, which has no session yet,
  carries a token bound to a short-lived cookie of its own.
- ``?next=`` after the login leads only to a page of the admin: a path that starts with
  ``/admin``, never ``//host`` or ``/\\host`` or a full URL (no open redirect).
- Anonymous requests are sent to the login page (JSON endpoints answer 401); a viewer
  asking for an editor's page or action gets 403.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mailer.config import get_settings
from mailer.db import transaction
from mailer.staff import accounts, sessions
from mailer.staff.audit import record
from mailer.staff.models import Role
from mailer.tokens import sign, verify
from mailer.web.admin.render import admin_page, redirect
from mailer.web.forms import BadForm, FormTooLarge, client_ip, read_form

router = APIRouter()

LOGIN_COOKIE = "mailer_admin_login"
MAX_FORM_BYTES = 1024 * 1024
MAX_FIELD_CHARS = 50_000


def session_cookie() -> str:
    # __Host-: the browser takes it only from https, for this host and path / alone.
    return "__Host-mailer_admin" if _secure() else "mailer_admin"


def _secure() -> bool:
    return get_settings().base_url.startswith("https://")


@dataclass(frozen=True)
class Staff:
    user_id: int
    email: str
    role: str
    csrf: str

    @property
    def is_editor(self) -> bool:
        return self.role == Role.editor


class AdminRefusal(Exception):
    """Stop the request: log in first (``login``), or not allowed (403), or a bad form."""

    def __init__(self, status: int, message: str, *, login: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.login = status, message, login


def _load(cookie_value: str | None) -> Staff | None:
    if not cookie_value:
        return None
    with transaction() as session:
        row = sessions.load(session, cookie_value)
        if row is None:
            return None
        return Staff(row.user.id, row.user.email, row.user.role, row.csrf_token)


def current_staff(request: Request) -> Staff | None:
    """The staff member behind the request's session cookie, if any (a sync dependency:
    FastAPI runs it in the thread pool)."""
    return _load(request.cookies.get(session_cookie()))


def viewer(request: Request, staff: Staff | None = Depends(current_staff)) -> Staff:
    """Any logged-in staff member."""
    if staff is None:
        raise AdminRefusal(401, "Please log in.", login=True)
    return staff


def editor(staff: Staff = Depends(viewer)) -> Staff:
    """An editor: compose, send, manage subscribers."""
    if not staff.is_editor:
        raise AdminRefusal(403, "This needs an editor's account; yours can only look.")
    return staff


async def form_of(request: Request, staff: Staff) -> dict[str, str]:
    """The posted form's fields, once its CSRF token matched the session's."""
    fields = await read_fields(request)
    token = fields.get("csrf", "")
    if not (token and secrets.compare_digest(token.encode(), staff.csrf.encode())):
        raise AdminRefusal(403, "This form has expired or did not come from this site. "
                                "Go back, reload the page and try again.")
    return fields


async def read_fields(request: Request) -> dict[str, str]:
    try:
        form = await read_form(request, max_body=MAX_FORM_BYTES, max_fields=500)
    except FormTooLarge:
        raise AdminRefusal(413, "The form is too large.") from None
    except BadForm:
        raise AdminRefusal(400, "The form could not be read. Reload the page and try again.") \
            from None
    if form.undecodable:
        raise AdminRefusal(400, f"The field {min(form.undecodable)[:40]!r} was not sent as "
                                "UTF-8 text. Reload the page and try again.")
    for key, value in form.values.items():
        if len(value) > MAX_FIELD_CHARS:
            raise AdminRefusal(413, f"The field {key[:40]!r} is longer than "
                                    f"{MAX_FIELD_CHARS:,} characters.")
    return form.values


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a page of the admin, never another site."""
    if not value or len(value) > 2000:
        return "/admin"
    if any(ch in value for ch in "\\\r\n\t\x00") or not value.startswith("/admin"):
        return "/admin"
    if value.startswith("//") or value.startswith("/admin/login"):
        return "/admin"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/admin"
    if parts.path != "/admin" and not parts.path.startswith("/admin/"):
        return "/admin"  # /admin.evil, /administrator…
    return value


# --- logging in and out -------------------------------------------------------------------------


def _login_token(nonce: str) -> str:
    return sign("admin-login", nonce)


def _login_page(request: Request, *, status: int = 200, error: str = "", email: str = "",
                nonce: str | None = None) -> HTMLResponse:
    nonce = nonce or secrets.token_urlsafe(24)
    response = admin_page(request, "login.html", None, status, banner=[], error=error,
                          email=email, login_csrf=_login_token(nonce),
                          next=safe_next(request.query_params.get("next")))
    response.set_cookie(LOGIN_COOKIE, nonce, path="/admin", httponly=True, samesite="lax",
                        secure=_secure(), max_age=3600)
    return response


@router.get("/admin/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    # Always the form, even with a live session cookie: a login replaces whatever session
    # the browser had (one planted by someone else included).
    return _login_page(request)


@router.post("/admin/login")
async def login(request: Request) -> Response:
    fields = await read_fields(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not verify("admin-login", nonce, fields.get("csrf", "")):
        return _login_page(request, status=403, email=fields.get("email", "")[:320],
                           error="The login form expired. Please try again.")
    email, password = fields.get("email", "").strip(), fields.get("password", "")
    result = await run_in_threadpool(_authenticate, request, email, password)
    if result is None:
        return _login_page(request, status=401, email=email[:320], nonce=nonce,
                           error="The email address or the password is wrong, or the account "
                                 "is locked after too many attempts. Try again later, or ask an "
                                 "administrator.")
    cookie_value, role = result
    target = safe_next(fields.get("next"))
    if target == "/admin" and role != Role.editor:
        target = "/admin/ops"
    response = redirect(target)
    response.set_cookie(session_cookie(), cookie_value, path="/", httponly=True, samesite="lax",
                        secure=_secure(), max_age=get_settings().session_hours * 3600)
    response.delete_cookie(LOGIN_COOKIE, path="/admin")
    return response


def _authenticate(request: Request, email: str, password: str) -> tuple[str, str] | None:
    with transaction() as session:
        # Whatever session the browser had before is gone: the login makes a new one.
        sessions.end(session, request.cookies.get(session_cookie()))
        result = accounts.authenticate(session, email=email, password=password,
                                       ip=client_ip(request))
        if result.user is None:
            return None
        value, _ = sessions.start(session, result.user)
        return value, result.user.role


@router.post("/admin/logout")
async def logout(request: Request, staff: Staff = Depends(viewer)) -> Response:
    await form_of(request, staff)
    await run_in_threadpool(_logout, request.cookies.get(session_cookie()), staff)
    response = redirect("/admin/login", "You are logged out.")
    response.delete_cookie(session_cookie(), path="/")
    return response


def _logout(cookie_value: str | None, staff: Staff) -> None:
    with transaction() as session:
        sessions.end(session, cookie_value)
        record(session, actor=staff.email, action="logout", target=f"staff:{staff.email}")


@router.get("/admin")
def home(staff: Staff = Depends(viewer)) -> Response:
    return redirect("/admin/editions" if staff.is_editor else "/admin/ops")


def refusal_response(request: Request, exc: AdminRefusal) -> Response:
    from fastapi.responses import JSONResponse

    wants_json = request.url.path.endswith(".json")
    if exc.login:
        if wants_json:
            return JSONResponse({"error": exc.message}, status_code=401)
        target = "/admin/login"
        if request.method == "GET":
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            target += f"?next={quote(safe_next(here), safe='/')}"
        return redirect(target)
    if wants_json:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return admin_page(request, "refused.html", None, exc.status, banner=[],
                      message=exc.message)
