"""The staff member's own account: the optional second factor (TOTP) and its recovery codes.

Every staff member, viewers too, can set up a second factor for themselves. The secret is
drawn when the setup page is shown and travels in the form (signed, bound to the account)
until the first code from the app proves the app has it; only then is it stored.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mailer.config import get_settings
from mailer.db import transaction
from mailer.staff import totp
from mailer.staff.models import StaffUser
from mailer.tokens import sign, verify
from mailer.web.admin.auth import AdminRefusal, Staff, form_of, viewer
from mailer.web.admin.render import admin_page, redirect

router = APIRouter(prefix="/admin/account")


def _user(session: object, staff: Staff) -> StaffUser:
    user = session.get(StaffUser, staff.user_id)  # type: ignore[attr-defined]
    if user is None:
        raise AdminRefusal(401, "Please log in.", login=True)
    return user  # type: ignore[no-any-return]


@router.get("", response_class=HTMLResponse)
def account(request: Request, staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        user = _user(session, staff)
        return admin_page(request, "account.html", staff, session=session, user=user,
                          enabled=totp.has_second_factor(user),
                          codes_left=totp.recovery_codes_left(session, user))


def _setup_page(request: Request, staff: Staff, secret: str, *, status: int = 200,
                error: str = "") -> HTMLResponse:
    uri = totp.provisioning_uri(secret, staff.email, get_settings().identity.list_name)
    return admin_page(request, "account-totp.html", staff, status, secret=secret,
                      grouped=" ".join(secret[i:i + 4] for i in range(0, len(secret), 4)),
                      qr=totp.qr_svg(uri), uri=uri, error=error,
                      secret_token=sign("totp-setup", f"{staff.user_id}.{secret}",
                                        keys=get_settings().all_secrets))


@router.get("/totp", response_class=HTMLResponse)
def setup(request: Request, staff: Staff = Depends(viewer)) -> Response:
    with transaction() as session:
        if totp.has_second_factor(_user(session, staff)):
            return redirect("/admin/account", "Two-factor authentication is on already.")
    return _setup_page(request, staff, totp.new_secret())


@router.post("/totp", response_class=HTMLResponse)
async def enable(request: Request, staff: Staff = Depends(viewer)) -> Response:
    form = await form_of(request, staff)
    secret = form.get("secret", "")
    keys = get_settings().all_secrets
    if not (len(secret) == 32 and verify("totp-setup", f"{staff.user_id}.{secret}",
                                         form.get("secret_token", ""), keys=keys)):
        return redirect("/admin/account/totp", "The setup form expired; here is a new code to "
                                               "scan.", "error")
    codes = await run_in_threadpool(_enable, staff, secret, form.get("code", ""))
    if isinstance(codes, str):
        return _setup_page(request, staff, secret, status=422, error=codes)
    return admin_page(request, "account-recovery.html", staff, codes=codes)


def _enable(staff: Staff, secret: str, code: str) -> list[str] | str:
    with transaction() as session:
        try:
            return totp.enable(session, _user(session, staff), secret, code[:100],
                               keys=get_settings().all_secrets)
        except totp.TOTPError as exc:
            return str(exc)


@router.post("/totp/off")
async def disable(request: Request, staff: Staff = Depends(viewer)) -> Response:
    form = await form_of(request, staff)
    done = await run_in_threadpool(_disable, staff, form.get("code", ""))
    if not done:
        return redirect("/admin/account", "That code is wrong or was used already: the second "
                                          "factor stays on.", "error")
    return redirect("/admin/account", "Two-factor authentication is off.")


def _disable(staff: Staff, code: str) -> bool:
    """Turning it off takes a code too: a session left open must not be enough."""
    with transaction() as session:
        user = _user(session, staff)
        if totp.verify(session, user, code[:100], keys=get_settings().all_secrets) is None:
            return False
        return totp.turn_off(session, user, by=staff.email)
