"""The admin's API tokens (editors only: a token reads and changes personal data): the
list, a new token (shown once, on the page that answers the form, never again), and
revoking one. The service (``api_tokens.service``) checks the values and writes the audit
entries (``api_token.create``, ``api_token.revoke``) with the staff member's address.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mailer.api_tokens import service
from mailer.db import transaction
from mailer.web.admin.auth import Staff, editor, form_of
from mailer.web.admin.render import admin_page, redirect

router = APIRouter(prefix="/admin")
HERE = "/admin/tokens"
#: Each scope is a checkbox named ``scope-<scope>`` (a form's fields are read one value
#: per name).
SCOPE_FIELD = "scope-"


def _page(request: Request, staff: Staff, status: int = 200, **context: object) -> HTMLResponse:
    with transaction() as session:
        tokens = service.all_tokens(session)
        return admin_page(request, "tokens.html", staff, status, session=session,
                          tokens=tokens, scopes=service.SCOPES,
                          default_rate=service.DEFAULT_RATE_LIMIT, **context)


@router.get("/tokens", response_class=HTMLResponse)
def tokens(request: Request, staff: Staff = Depends(editor)) -> HTMLResponse:
    return _page(request, staff, made=None, error="", form={})


@router.post("/tokens", response_class=HTMLResponse)
async def create(request: Request, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_create, request, form, staff)


def _create(request: Request, form: dict[str, str], staff: Staff) -> Response:
    scopes = [s for s in service.SCOPES if form.get(SCOPE_FIELD + s)]
    try:
        expires = _number(form.get("expires_days", ""), "Valid for (days)")
        rate = _number(form.get("rate_limit", ""), "Requests a minute")
        with transaction() as session:
            token, value = service.create(  # audited there
                session, name=form.get("name", ""), scopes=scopes, by=staff.email,
                expires_days=expires,
                rate_limit_per_minute=service.DEFAULT_RATE_LIMIT if rate is None else rate)
            made = {"name": token.name, "value": value, "scopes": list(token.scopes)}
    except service.TokenError as exc:
        return _page(request, staff, 422, made=None, error=str(exc), form=form)
    # Shown on this answer only (no-store, not in a redirect's cookie or URL).
    return _page(request, staff, made=made, error="", form={})


def _number(raw: str, label: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        raise service.TokenError(f"{label}: a whole number, please.")
    return int(raw)


@router.post("/tokens/revoke")
async def revoke(request: Request, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_revoke, form.get("name", ""), staff)


def _revoke(name: str, staff: Staff) -> Response:
    try:
        with transaction() as session:
            service.revoke(session, name, by=staff.email)  # audited there
    except service.TokenError as exc:
        return redirect(HERE, str(exc), "error")
    return redirect(HERE, f"Token {name} revoked: it is refused from its next request on.")
