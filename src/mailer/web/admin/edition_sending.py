"""The admin's send of an edition: test copies, schedule, send, pause, resume, cancel, watch.

Thin routes, as in ``editions``: the sending service does the work in one transaction and
writes the audit entry; the send's checks are :func:`~mailer.delivery.preflight.preflight`'s,
shown as they are.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailer.clicks import queries as clicks
from mailer.config import get_settings
from mailer.db import transaction, utcnow
from mailer.delivery import service as sending
from mailer.delivery.preflight import preflight
from mailer.localtime import format_clock
from mailer.web.admin.auth import Staff, editor, form_of, viewer
from mailer.web.admin.editions import PROBLEMS, edition_or_404, edition_url, list_of
from mailer.web.admin.render import admin_page, local_time, parse_local_time, redirect, zone
from mailer.web.bounds import RowId

router = APIRouter(prefix="/admin/editions")


# --- test copies -------------------------------------------------------------------------------


@router.post("/{edition_id}/test")
async def test_copy(request: Request, edition_id: RowId,
                    staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    addresses = [a.strip() for a in form.get("to", "").replace(",", "\n").splitlines()
                 if a.strip()]
    if not addresses:
        return redirect(edition_url(edition_id), "Give at least one address for the test copy.",
                        "error")
    if len(addresses) > 10:
        return redirect(edition_url(edition_id), "At most 10 addresses for test copies.", "error")
    return await run_in_threadpool(_test_copy, edition_id, addresses, staff)


def _test_copy(edition_id: int, addresses: list[str], staff: Staff) -> Response:
    with transaction() as session:
        edition_or_404(session, edition_id)
    try:
        # one at a time in this process: sending.send_test_copies holds the SMTP connection
        results = sending.send_test_copies(edition_id, addresses, by=staff.email,
                                           settings=get_settings())
    except PROBLEMS as exc:
        return redirect(edition_url(edition_id), f"No test copy was sent: {exc}", "error")
    failed = [r for _, r in results if not r.startswith("sent")]
    lines = "; ".join(f"{address}: {result}" for address, result in results)
    return redirect(edition_url(edition_id), f"Test copy — {lines}", "error" if failed else "ok")


# --- schedule, send, pause, resume, cancel -----------------------------------------------------


@router.post("/{edition_id}/schedule")
async def schedule(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_schedule, edition_id, form, staff)


def _schedule(edition_id: int, form: dict[str, str], staff: Staff) -> Response:
    try:
        at = parse_local_time(form.get("at") or _day_and_time(form), "time to send")
        with transaction() as session:
            sending.schedule_send(session, edition_id, at, by=staff.email,
                                  settings=get_settings())
    except PROBLEMS as exc:
        return redirect(edition_url(edition_id), str(exc), "error")
    return redirect(edition_url(edition_id), f"Scheduled: it goes out on {local_time(at)}.")


def _day_and_time(form: dict[str, str]) -> str:
    """The schedule form's date and 24-hour time (09:00 or 9:00) as one ISO time."""
    day, time = form.get("day", "").strip(), form.get("time", "").strip()
    if not day or not time:
        raise ValueError("Give the day and the time to send it (24 h, for example 09:00).")
    return f"{day}T{time.zfill(5)}"


@router.post("/{edition_id}/unschedule")
async def unschedule(request: Request, edition_id: RowId,
                     staff: Staff = Depends(editor)) -> Response:
    await form_of(request, staff)
    return await run_in_threadpool(
        _act, edition_id, lambda s: sending.unschedule(s, edition_id, by=staff.email),
        "Not scheduled any more: it is a draft again.")


@router.get("/{edition_id}/send", response_class=HTMLResponse)
def confirm_send(request: Request, edition_id: RowId,
                 staff: Staff = Depends(editor)) -> HTMLResponse:
    with transaction() as session:
        edition = edition_or_404(session, edition_id)
        checked = preflight(session, edition, settings=get_settings())
        return admin_page(request, "send.html", staff, session=session, edition=edition,
                          audience=checked.audience or 0, problems=checked.problems,
                          articles=len(edition.articles), edition_list=list_of(session, edition))


@router.post("/{edition_id}/send")
async def send(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    if form.get("confirm") != "yes":
        return redirect(edition_url(edition_id, "send"), "Confirm the send with the button.",
                        "error")
    return await run_in_threadpool(_send, edition_id, form.get("audience", ""), staff)


def _send(edition_id: int, shown: str, staff: Staff) -> Response:
    try:
        with transaction() as session:
            audience = sending.start_send(session, edition_id, by=staff.email,
                                          settings=get_settings())
    except PROBLEMS as exc:
        return redirect(edition_url(edition_id), f"Not sent: {exc}", "error")
    note = "" if shown == str(audience) else f" (the audience changed since the confirmation " \
                                             f"page showed {shown or '?'})"
    return redirect(edition_url(edition_id, "progress"),
                    f"Sending to {audience:,} reader(s){note}.")


@router.post("/{edition_id}/pause")
async def pause(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    reason = " ".join(form.get("reason", "").split())[:500]
    return await run_in_threadpool(
        _act, edition_id, lambda s: sending.pause(s, edition_id, by=staff.email,
                                                  reason=reason or f"paused by {staff.email}"),
        "Paused: no further message goes out until you resume.", "progress")


@router.post("/{edition_id}/resume")
async def resume(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    await form_of(request, staff)
    return await run_in_threadpool(
        _act, edition_id, lambda s: sending.resume(s, edition_id, by=staff.email,
                                 sending=get_settings().sending),
        "Resumed.", "progress")


@router.get("/{edition_id}/cancel", response_class=HTMLResponse)
def confirm_cancel(request: Request, edition_id: RowId,
                   staff: Staff = Depends(editor)) -> HTMLResponse:
    with transaction() as session:
        edition = edition_or_404(session, edition_id)
        counts = sending.state_counts(session, edition_id)
        return admin_page(request, "cancel.html", staff, session=session, edition=edition,
                          waiting=counts.get("queued", 0) + counts.get("deferred", 0))


@router.post("/{edition_id}/cancel")
async def cancel(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    if form.get("confirm") != "yes":
        return redirect(edition_url(edition_id, "cancel"), "Confirm with the button.", "error")

    def cancel(session: Session) -> str:
        n = sending.cancel(session, edition_id, by=staff.email)
        return f"Cancelled; {n:,} message(s) waiting to go out never will."

    return await run_in_threadpool(_act, edition_id, cancel, "")


@router.post("/{edition_id}/acknowledge")
async def acknowledge(request: Request, edition_id: RowId,
                      staff: Staff = Depends(editor)) -> Response:
    await form_of(request, staff)

    def acknowledge(session: Session) -> str:
        n = sending.acknowledge_complaints(session, edition_id, by=staff.email)
        return f"{n:,} complaint(s) acknowledged: sending may go on."

    return await run_in_threadpool(_act, edition_id, acknowledge, "")


def _act(edition_id: int, action: Any, done: str, page: str = "") -> Response:
    """Run one sending-service call in a transaction; its string result, if any, is the
    message shown."""
    try:
        with transaction() as session:
            edition_or_404(session, edition_id)
            said = action(session)
    except PROBLEMS as exc:
        return redirect(edition_url(edition_id, page), str(exc), "error")
    return redirect(edition_url(edition_id, page), said if isinstance(said, str) else done)


# --- watching a send ------------------------------------------------------------------------------


@router.get("/{edition_id}/progress", response_class=HTMLResponse)
def progress_page(request: Request, edition_id: RowId,
                  staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        edition = edition_or_404(session, edition_id)
        progress = sending.progress(session, edition_id)
        return admin_page(request, "progress.html", staff, session=session, edition=edition,
                          progress=_with_clock(progress.as_dict()),
                          links=clicks.per_link(session, edition_id))


@router.get("/{edition_id}/progress.json")
def progress_json(edition_id: RowId, staff: Staff = Depends(viewer)) -> JSONResponse:
    with transaction() as session:
        edition_or_404(session, edition_id)
        progress = sending.progress(session, edition_id).as_dict()
    return JSONResponse(_with_clock(progress), headers={"Cache-Control": "no-store"})


def _with_clock(progress: dict[str, Any]) -> dict[str, Any]:
    """The time of the figures, written by the server in the association's zone and 24 h
    clock (the browser's own clock would follow its locale: 9:00:05 AM)."""
    return {**progress, "as_of": format_clock(utcnow(), zone=zone())}
