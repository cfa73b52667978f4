"""Rendering the admin's pages: the shared layout's context, flash messages, times.

Every page gets the staff member, the CSRF token for its forms, the alerts banner and
the flash message of the previous action. Headers keep the admin out of frames and
caches and allow exactly one script, ``/admin/assets/admin.js``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
from functools import partial
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from mailer.config import get_settings
from mailer.emails.render import jinja_env
from mailer.localtime import format_date, format_time, window_label
from mailer.tokens import sign, verify

if TYPE_CHECKING:
    from mailer.web.admin.auth import Staff

log = logging.getLogger(__name__)

FLASH_COOKIE = "mailer_admin_flash"


def headers() -> dict[str, str]:
    return {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        # The one script is our own file; previews are framed from our own origin only.
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; connect-src 'self'; "
            "style-src 'unsafe-inline'; img-src 'self' data: https:; frame-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
    }


def admin_page(request: Request, name: str, staff: Staff | None, status_code: int = 200, *,
               session: Session | None = None, **context: Any) -> HTMLResponse:
    """Render ``templates/web/admin/<name>``. A route that has a transaction open passes
    its ``session``: the alerts banner reads through it (on SQLite a second transaction
    would wait for the first one's lock)."""
    settings = get_settings()
    flash = read_flash(request)
    html = jinja_env().get_template(f"web/admin/{name}").render(
        settings=settings, staff=staff, csrf=staff.csrf if staff else "", flash=flash,
        banner=context.pop("banner") if "banner" in context else _banner(staff, session),
        path=request.url.path, local=local_time, local_date=local_date,
        date_label=local_date, window_label=partial(window_label, zone=settings.identity.zone),
        ago=ago, duration=duration,
        readable=readable, **context)
    response = HTMLResponse(html, status_code=status_code, headers=headers())
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return response


def _banner(staff: Staff | None, session: Session | None) -> list[Any]:
    """The alerts that hold now, for the top of every page (nothing for anonymous pages)."""
    if staff is None:
        return []
    from mailer.db import transaction
    from mailer.ops import alerts, status

    try:
        settings = get_settings()
        if session is not None:
            with session.begin_nested():  # a failing query must not spoil the caller's
                _, queues, _, workers = status.redis_state(settings, session)
                return alerts.evaluate(session, settings, queues=queues, workers=workers)
        with transaction() as own:
            _, queues, _, workers = status.redis_state(settings, own)
            return alerts.evaluate(own, settings, queues=queues, workers=workers)
    except Exception:  # the banner must never keep a page from showing
        log.exception("could not work out the alerts for the banner")
        return []


# --- after an action: redirect with a message ---------------------------------------------------


def redirect(url: str, message: str = "", kind: str = "ok") -> RedirectResponse:
    """303 to ``url`` (Post/Redirect/Get), carrying a one-time message for the next page."""
    response = RedirectResponse(url, status_code=303)
    if message:
        value = base64.urlsafe_b64encode(json.dumps([kind, message[:1500]]).encode()).decode()
        signature = sign("admin-flash", value, keys=get_settings().all_secrets)
        response.set_cookie(FLASH_COOKIE, f"{value}.{signature}", path="/admin",
                            httponly=True, samesite="lax", secure=_secure(), max_age=60)
    return response


def read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE, "")
    value, _, signature = raw.rpartition(".")
    if not value or not verify("admin-flash", value, signature, keys=get_settings().all_secrets):
        return None
    try:
        kind, message = json.loads(base64.urlsafe_b64decode(value.encode()))
    except (ValueError, TypeError):
        return None
    return {"kind": str(kind), "message": str(message)}


def _secure() -> bool:
    return get_settings().base_url.startswith("https://")


def download(body: bytes | str, filename: str, media_type: str) -> Response:
    return Response(body, media_type=media_type, headers={
        **headers(), "Content-Disposition": f'attachment; filename="{filename}"'})


# --- times, in the association's time zone (mailer.localtime: one format everywhere) --------------


def zone() -> ZoneInfo:
    """The association's time zone, which every time the admin shows is written in."""
    return get_settings().identity.zone


def local_time(moment: dt.datetime | None, *, seconds: bool = False) -> str:
    return format_time(moment, zone=zone(), seconds=seconds)


def local_date(moment: dt.datetime | dt.date | None) -> str:
    return format_date(moment, zone=zone())


_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?([+-]\d\d:\d\d|Z)")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")


def readable(value: str) -> str:
    """A value of the audit log's JSON details, with an ISO time or date in the admin's one
    format (the details keep ISO 8601: they are data)."""
    try:
        if _ISO_TIME.fullmatch(value):
            return local_time(dt.datetime.fromisoformat(value))
        if _ISO_DATE.fullmatch(value):
            return local_date(dt.date.fromisoformat(value))
    except ValueError:
        pass
    return value


def ago(moment: dt.datetime | float | None) -> str:
    if moment is None:
        return "never"
    now = dt.datetime.now(dt.UTC)
    then = moment if isinstance(moment, dt.datetime) else dt.datetime.fromtimestamp(moment, dt.UTC)
    return duration((now - then).total_seconds()) + " ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def parse_date(value: str, what: str, *, end_of_day: bool = False) -> dt.datetime | None:
    """A date from a form (YYYY-MM-DD) as midnight in the association's time zone; with
    ``end_of_day`` the midnight after it, so that the whole day is included."""
    value = value.strip()
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"the {what} is not a date: {value[:40]!r} (use YYYY-MM-DD)") from None
    moment = dt.datetime.combine(day, dt.time(), tzinfo=zone())
    return moment + dt.timedelta(days=1) if end_of_day else moment


def parse_local_time(value: str, what: str) -> dt.datetime:
    """A time from a datetime-local input (YYYY-MM-DDTHH:MM) in the association's zone."""
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"the {what} is not a time: {value[:40]!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone())
