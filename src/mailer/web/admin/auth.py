"""Logging in and out, who is asking, and the checks every admin request passes.

- The session cookie is HttpOnly, SameSite=Lax, Secure (and ``__Host-``) when the site is
  served over https; its value is new at every login (no session fixation).
- Every form carries the session's CSRF token; the login form, which has no session yet,
  carries a token bound to a short-lived cookie of its own.
- ``?next=`` after the login leads only to a page of the admin: a path that starts with
  ``/admin``, never ``//host`` or ``/\\host`` or a full URL (no open redirect).
- Anonymous requests are sent to the login page (JSON endpoints answer 401); a viewer
  asking for an editor's page or action gets 403.
- Failed logins are throttled per client address and per (address, account), never by
  locking the account (``staff/throttle.py``). With a second factor set up, the right
  password leads to a code page; a signed cookie carries who it is for, for 5 minutes.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mailer.config import get_settings
from mailer.db import transaction
from mailer.staff import accounts, sessions, throttle, totp
from mailer.staff.audit import record
from mailer.staff.models import Role, StaffUser
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
        row = sessions.load(session, cookie_value, get_settings().staff)
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
    if not sessions.csrf_ok(staff.csrf, fields.get("csrf")):
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


def _keys() -> list[bytes]:
    """What the login's cookies and forms are signed with (the secret key first)."""
    return get_settings().all_secrets


def _login_token(nonce: str) -> str:
    return sign("admin-login", nonce, keys=_keys())


def _login_page(request: Request, *, status: int = 200, error: str = "", email: str = "",
                nonce: str | None = None) -> HTMLResponse:
    """The login form, with a token bound to the login cookie it sets."""
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


WRONG_LOGIN = "The email address or the password is wrong."
WRONG_CODE = "That code is wrong, or it was used already. Type the code your app shows now, " \
             "or one of your recovery codes."


def _throttled(request: Request, wait: int, *, code_step: bool = False, **context: str
               ) -> HTMLResponse:
    minutes = -(-wait // 60)
    when = f"{wait} seconds" if wait < 120 else f"{minutes} minutes"
    error = (f"Too many failed logins from your network. Try again in {when}. (Someone "
             "logging in from elsewhere is not held up.)")
    if code_step:
        response = _code_page(request, status=429, error=error, **context)
    else:
        response = _login_page(request, status=429, error=error, **context)
    response.headers["Retry-After"] = str(wait)
    return response


@router.post("/admin/login")
async def login(request: Request) -> Response:
    fields = await read_fields(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not verify("admin-login", nonce, fields.get("csrf", ""), keys=_keys()):
        return _login_page(request, status=403, email=fields.get("email", "")[:320],
                           error="The login form expired. Please try again.")
    email, password = fields.get("email", "").strip(), fields.get("password", "")
    ip = client_ip(request)
    wait = await run_in_threadpool(throttle.wait_seconds, ip, email)
    if wait:
        return _throttled(request, wait, email=email[:320], nonce=nonce)
    result = await run_in_threadpool(_authenticate, request, email, password)
    if result is None:
        await run_in_threadpool(throttle.record_failure, ip, email, get_settings().staff)
        return _login_page(request, status=401, email=email[:320], nonce=nonce,
                           error=WRONG_LOGIN)
    next_page = safe_next(fields.get("next"))
    if isinstance(result, int):  # the password was right; now the second factor
        cookie, step_nonce = _second_step_value(result)
        response = _code_page(request, nonce=step_nonce, next_page=next_page)
        response.set_cookie(SECOND_STEP_COOKIE, cookie, path="/admin",
                            httponly=True, samesite="lax", secure=_secure(),
                            max_age=SECOND_STEP_SECONDS)
        response.delete_cookie(LOGIN_COOKIE, path="/admin")
        return response
    await run_in_threadpool(throttle.record_success, ip, email)
    return _logged_in(*result, next_page)


def _logged_in(cookie_value: str, role: str, next_page: str) -> Response:
    if next_page == "/admin" and role != Role.editor:
        next_page = "/admin/ops"
    response = redirect(next_page)
    response.set_cookie(session_cookie(), cookie_value, path="/", httponly=True, samesite="lax",
                        secure=_secure(), max_age=get_settings().staff.session_hours * 3600)
    response.delete_cookie(LOGIN_COOKIE, path="/admin")
    response.delete_cookie(SECOND_STEP_COOKIE, path="/admin")
    return response


def _authenticate(request: Request, email: str, password: str) -> tuple[str, str] | int | None:
    """(session cookie value, role) once logged in; the user's id when the password was
    right and a second factor comes next; None when the login failed."""
    with transaction() as session:
        # Whatever session the browser had before is gone: the login makes a new one.
        sessions.end(session, request.cookies.get(session_cookie()))
        result = accounts.authenticate(session, email=email, password=password,
                                       ip=client_ip(request))
        if result.user is None:
            return None
        if result.reason == "second-factor":
            return result.user.id
        value, _ = sessions.start(session, result.user, get_settings().staff)
        return value, result.user.role


# --- the second factor: a code from the app, or a recovery code ----------------------------------

SECOND_STEP_COOKIE = "mailer_admin_second_step"
#: How long after the password the code may come.
SECOND_STEP_SECONDS = 300


def _second_step_value(user_id: int) -> tuple[str, str]:
    """A cookie naming whose password was just right, until when, signed; and its nonce,
    to which the code form's token is bound."""
    nonce = secrets.token_urlsafe(16)
    value = f"{user_id}.{int(time.time()) + SECOND_STEP_SECONDS}.{nonce}"
    return f"{value}.{sign('admin-second-step', value, keys=_keys())}", nonce


def _second_step(request: Request) -> tuple[int, str] | None:
    """(user id, nonce) of a valid second-step cookie."""
    raw = request.cookies.get(SECOND_STEP_COOKIE, "")
    value, _, signature = raw.rpartition(".")
    if not value or not verify("admin-second-step", value, signature, keys=_keys()):
        return None
    user_id, expires, nonce = value.split(".", 2)
    if not (user_id.isascii() and user_id.isdigit() and expires.isascii() and expires.isdigit()
            and len(user_id) <= 10) or int(expires) < time.time():
        return None
    return int(user_id), nonce


def _code_page(request: Request, *, nonce: str, status: int = 200, error: str = "",
               next_page: str = "/admin") -> HTMLResponse:
    return admin_page(request, "login-code.html", None, status, banner=[], error=error,
                      next=next_page, code_csrf=sign("admin-login-code", nonce, keys=_keys()))


@router.post("/admin/login/code")
async def login_code(request: Request) -> Response:
    fields = await read_fields(request)
    step = _second_step(request)
    next_page = safe_next(fields.get("next"))
    if step is None or not verify("admin-login-code", step[1], fields.get("csrf", ""),
                                  keys=_keys()):
        return _login_page(request, status=403, error="The login took too long or the form "
                                                      "expired. Please log in again.")
    user_id, nonce = step
    ip = client_ip(request)
    email = await run_in_threadpool(_email_of, user_id)
    wait = await run_in_threadpool(throttle.wait_seconds, ip, email)
    if wait:
        return _throttled(request, wait, code_step=True, nonce=nonce, next_page=next_page)
    result = await run_in_threadpool(_second_factor, request, user_id, fields.get("code", ""))
    if result is None:
        await run_in_threadpool(throttle.record_failure, ip, email, get_settings().staff)
        return _code_page(request, status=401, error=WRONG_CODE, nonce=nonce,
                          next_page=next_page)
    await run_in_threadpool(throttle.record_success, ip, email)
    return _logged_in(*result, next_page)


def _email_of(user_id: int) -> str:
    with transaction() as session:
        user = session.get(StaffUser, user_id)
        return user.email if user else ""


def _second_factor(request: Request, user_id: int, code: str) -> tuple[str, str] | None:
    with transaction() as session:
        user = session.get(StaffUser, user_id)
        if user is None or not user.active:
            return None
        method = totp.verify(session, user, code[:100], keys=_keys())
        if method is None:
            accounts.fail_second_factor(session, user, ip=client_ip(request))
            return None
        sessions.end(session, request.cookies.get(session_cookie()))
        accounts.complete_login(session, user, ip=client_ip(request), second_factor=method)
        value, _ = sessions.start(session, user, get_settings().staff)
        return value, user.role


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
