"""The admin's editions: list, draft, edit, preview, test, schedule, send, watch.

Thin routes: each reads its form, calls the editions or the sending service in one
transaction with the staff member's address as the actor, and redirects back with a
message (Post/Redirect/Get). A refusal of the service (an edition that cannot be sent, a
window without articles) is shown as the message; nothing changes then.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailer.articles.models import Article
from mailer.db import transaction, utcnow
from mailer.delivery import service as sending
from mailer.delivery.models import Delivery
from mailer.editions import service as editions
from mailer.editions.compose import INTRO_HINT, category_order, reading_order, twice_greeted
from mailer.editions.models import Edition, EditionArticle, EditionState
from mailer.editions.states import TransitionError
from mailer.localtime import (
    format_clock,
    format_date,
    format_time,
    last_day,
    window_label,
    zone,
    zone_name,
)
from mailer.staff.audit import recent
from mailer.web.admin.auth import AdminRefusal, Staff, editor, form_of, viewer
from mailer.web.admin.render import (
    admin_page,
    headers,
    parse_date,
    parse_local_time,
    redirect,
)
from mailer.web.bounds import RowId, id_or_none

router = APIRouter(prefix="/admin/editions")
S = EditionState
#: Problems a staff member can act on; anything else is a bug and shows as a 500.
PROBLEMS = (editions.EditionError, sending.SendError, TransitionError, ValueError)
#: Test copies go over this process's one SMTP connection, one request at a time.
_test_lock = threading.Lock()


def _edition(session: Session, edition_id: int) -> Edition:
    edition = session.get(Edition, edition_id)
    if edition is None:
        raise AdminRefusal(404, f"There is no edition {edition_id}.")
    return edition


def _url(edition_id: int, page: str = "") -> str:
    return f"/admin/editions/{edition_id}" + (f"/{page}" if page else "")


# --- the list, and a new draft ----------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def index(request: Request, staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        rows = session.scalars(select(Edition).order_by(Edition.id.desc()).limit(200)).all()
        articles = dict(session.execute(
            select(EditionArticle.edition_id, func.count()).group_by(EditionArticle.edition_id)
        ).all())
        counts: dict[int, dict[str, int]] = {}
        for edition_id, state, n in session.execute(
                select(Delivery.edition_id, Delivery.state, func.count())
                .where(Delivery.edition_id.in_([e.id for e in rows]))
                .group_by(Delivery.edition_id, Delivery.state)):
            counts.setdefault(edition_id, {})[state] = n
        newest = session.scalars(select(Article).order_by(Article.published_at.desc())
                                 .limit(8)).all()
        audience = sending.audience_size(session)
        return admin_page(request, "editions.html", staff, session=session, editions=rows,
                          articles=articles, counts=counts, newest=newest, audience=audience)


@router.post("")
async def draft(request: Request, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_draft, form, staff)


def _draft(form: dict[str, str], staff: Staff) -> Response:
    try:
        start = parse_date(form.get("since", ""), "start date")
        end = parse_date(form.get("until", ""), "end date", end_of_day=True)
        with transaction() as session:
            # Drafted in a savepoint: a window without articles drafts nothing.
            savepoint = session.begin_nested()
            edition = editions.draft_edition(session, subject=form.get("subject") or None,
                                             window_start=start, window_end=end, by=staff.email)
            if not edition.articles:
                window = window_label(edition.window_start, edition.window_end)
                savepoint.rollback()
                newest = session.scalar(select(func.max(Article.published_at)))
                hint = (f" The newest article is from {format_date(newest)}: choose a start "
                        "date before it." if newest else " No article has been imported yet.")
                return redirect("/admin/editions", f"No article was published {window}, so "
                                f"no edition was drafted.{hint}", "error")
            savepoint.commit()
            _audit(session, staff, "edition.draft", edition.id,
                   {"articles": len(edition.articles)})
            edition_id, n = edition.id, len(edition.articles)
    except PROBLEMS as exc:
        return redirect("/admin/editions", str(exc), "error")
    return redirect(_url(edition_id), f"Edition {edition_id} drafted with {n} article(s).")


def _audit(session: Session, staff: Staff, action: str, edition_id: int,
           detail: dict[str, Any] | None = None) -> None:
    from mailer.staff.audit import record

    record(session, actor=staff.email, action=action, target=f"edition:{edition_id}",
           detail=detail)


# --- one edition -----------------------------------------------------------------------------


@router.get("/{edition_id}", response_class=HTMLResponse)
def show(request: Request, edition_id: RowId, staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        edition = _edition(session, edition_id)
        editable = edition.state in (S.draft, S.scheduled)
        problem = hold = None
        if editable:
            try:
                editions.check_sendable(session, edition)
            except editions.NotSendable as exc:
                problem = str(exc)
            hold = sending.complaint_hold(session)
        articles = [link.article for link in edition.articles]
        ordered = reading_order(articles, edition.category_order)
        candidates = editions.candidate_articles(session, edition) if editable else []
        counts = sending.state_counts(session, edition.id)
        audit = recent(session, target=f"edition:{edition.id}", limit=50)
        from mailer.bounces.rates import edition_rates

        rates = edition_rates(session, edition.id) if counts else None
        return admin_page(
            request, "edition.html", staff, session=session, edition=edition, editable=editable,
            problem=problem, hold=hold, ordered=ordered, candidates=candidates, counts=counts,
            audit=audit, rates=rates, sections=category_order(edition.category_order),
            window_since=edition.window_start.astimezone(zone()).date().isoformat(),
            window_until=last_day(edition.window_end).isoformat(),
            audience=sending.audience_size(session) if editable else edition.audience_count,
            zone_name=zone_name(utcnow()), intro_hint=INTRO_HINT,
        )


@router.post("/{edition_id}/edit")
async def edit(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_edit, edition_id, form, staff)


def _edit(edition_id: int, form: dict[str, str], staff: Staff) -> Response:
    try:
        with transaction() as session:
            edition = _edition(session, edition_id)
            categories = [c.strip() for c in form.get("categories", "").split(",") if c.strip()]
            editions.update_edition(
                session, edition, subject=form.get("subject", edition.subject),
                preheader=form.get("preheader", ""), intro=form.get("intro", ""),
                category_order=categories)
            _audit(session, staff, "edition.edit", edition_id,
                   {"subject": edition.subject, "preheader": edition.preheader,
                    "categories": edition.category_order})
    except PROBLEMS as exc:
        return redirect(_url(edition_id), str(exc), "error")
    warning = twice_greeted(form.get("intro", ""))
    return redirect(_url(edition_id), f"Saved. {warning}" if warning else "Saved.")


@router.post("/{edition_id}/window")
async def window(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_window, edition_id, form, staff)


def _window(edition_id: int, form: dict[str, str], staff: Staff) -> Response:
    try:
        start = parse_date(form.get("since", ""), "start date")
        end = parse_date(form.get("until", ""), "end date", end_of_day=True)
        with transaction() as session:
            edition = _edition(session, edition_id)
            editions.update_edition(session, edition, window_start=start, window_end=end)
            _audit(session, staff, "edition.window", edition_id,
                   {"from": edition.window_start.isoformat(),
                    "to_and_including": last_day(edition.window_end).isoformat(),
                    "articles": len(edition.articles)})
            n = len(edition.articles)
    except PROBLEMS as exc:
        return redirect(_url(edition_id), str(exc), "error")
    return redirect(_url(edition_id), f"New window: {n} article(s) chosen from it.")


@router.post("/{edition_id}/articles")
async def articles(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_articles, edition_id, form, staff)


def _articles(edition_id: int, form: dict[str, str], staff: Staff) -> Response:
    action = form.get("action", "")
    article_id = id_or_none(form.get("article", ""))
    if article_id is None:
        return redirect(_url(edition_id), "Which article? The form named none.", "error")
    try:
        with transaction() as session:
            edition = _edition(session, edition_id)
            if action == "add":
                editions.add_article(session, edition, article_id)
            elif action == "drop":
                editions.drop_article(session, edition, article_id)
            elif action in ("up", "down"):
                _move(session, edition, article_id, -1 if action == "up" else 1)
            else:
                return redirect(_url(edition_id), f"Unknown action {action[:20]!r}.", "error")
            _audit(session, staff, f"edition.article.{action}", edition_id,
                   {"article": article_id})
    except PROBLEMS as exc:
        return redirect(_url(edition_id), str(exc), "error")
    return redirect(_url(edition_id) + "#articles")


def _move(session: Session, edition: Edition, article_id: int, step: int) -> None:
    """Move an article before the previous (or after the next) one of its section, as the
    reader sees them: the edition's order decides only within a section."""
    ordered = reading_order([link.article for link in edition.articles], edition.category_order)
    index = next((i for i, (_, a) in enumerate(ordered) if a.id == article_id), None)
    if index is None:
        raise editions.EditionError(f"article {article_id} is not in this edition")
    section = ordered[index][0]
    neighbour = index + step
    if not 0 <= neighbour < len(ordered) or ordered[neighbour][0] != section:
        raise editions.EditionError("It is already the " + ("first" if step < 0 else "last")
                                    + f" article of “{section}”. Change the order of the "
                                    "sections to move it further.")
    ids = [link.article_id for link in edition.articles]
    editions.move_article(session, edition, article_id, ids.index(ordered[neighbour][1].id))


# --- preview and test copies ---------------------------------------------------------------------


@router.get("/{edition_id}/preview", response_class=HTMLResponse)
def preview(request: Request, edition_id: RowId, staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        edition = _edition(session, edition_id)
        try:
            rendered = editions.render_preview(session, edition)
        except editions.EditionError as exc:
            return admin_page(request, "refused.html", staff, 422, session=session,
                              message=str(exc))
        return admin_page(request, "preview.html", staff, session=session, edition=edition,
                          rendered=rendered, size=len(rendered.html.encode()))


@router.get("/{edition_id}/preview.html", response_class=HTMLResponse)
def preview_html(edition_id: RowId, staff: Staff = Depends(viewer)) -> HTMLResponse:
    """The mail's HTML exactly as a reader gets it, for the preview's frames."""
    with transaction() as session:
        try:
            rendered = editions.render_preview(session, _edition(session, edition_id))
        except editions.EditionError as exc:
            raise AdminRefusal(422, str(exc)) from None
    return HTMLResponse(rendered.html, headers={
        **headers(), "X-Frame-Options": "SAMEORIGIN",
        # What a mail program allows: no script, no form, images from anywhere.
        "Content-Security-Policy": "default-src 'none'; img-src https: data:; "
                                   "style-src 'unsafe-inline'; frame-ancestors 'self'; "
                                   "base-uri 'none'; form-action 'none'",
    })


@router.post("/{edition_id}/test")
async def test_copy(request: Request, edition_id: RowId,
                    staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    addresses = [a.strip() for a in form.get("to", "").replace(",", "\n").splitlines()
                 if a.strip()]
    if not addresses:
        return redirect(_url(edition_id), "Give at least one address for the test copy.",
                        "error")
    if len(addresses) > 10:
        return redirect(_url(edition_id), "At most 10 addresses for test copies.", "error")
    return await run_in_threadpool(_test_copy, edition_id, addresses, staff)


def _test_copy(edition_id: int, addresses: list[str], staff: Staff) -> Response:
    with transaction() as session:
        _edition(session, edition_id)
    try:
        with _test_lock:
            results = sending.send_test_copies(edition_id, addresses, by=staff.email)
    except PROBLEMS as exc:
        return redirect(_url(edition_id), f"No test copy was sent: {exc}", "error")
    failed = [r for _, r in results if not r.startswith("sent")]
    lines = "; ".join(f"{address}: {result}" for address, result in results)
    return redirect(_url(edition_id), f"Test copy — {lines}", "error" if failed else "ok")


# --- schedule, send, pause, resume, cancel -----------------------------------------------------


@router.post("/{edition_id}/schedule")
async def schedule(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_schedule, edition_id, form, staff)


def _schedule(edition_id: int, form: dict[str, str], staff: Staff) -> Response:
    try:
        at = parse_local_time(form.get("at") or _day_and_time(form), "time to send")
        with transaction() as session:
            sending.schedule_send(session, edition_id, at, by=staff.email)
    except PROBLEMS as exc:
        return redirect(_url(edition_id), str(exc), "error")
    return redirect(_url(edition_id), f"Scheduled: it goes out on {format_time(at)}.")


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
        edition = _edition(session, edition_id)
        problem = None
        if edition.state not in (S.draft, S.scheduled):
            problem = f"This edition is {edition.state}; only a draft or a scheduled edition " \
                      "can be sent."
        else:
            try:
                editions.check_sendable(session, edition)
            except editions.NotSendable as exc:
                problem = str(exc)
            problem = problem or sending.complaint_hold(session)
        audience = sending.audience_size(session)
        if not problem and audience == 0:
            problem = "Nobody would receive it: there is no confirmed, unsuppressed subscriber."
        return admin_page(request, "send.html", staff, session=session, edition=edition,
                          audience=audience, problem=problem, articles=len(edition.articles))


@router.post("/{edition_id}/send")
async def send(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    if form.get("confirm") != "yes":
        return redirect(_url(edition_id, "send"), "Confirm the send with the button.", "error")
    return await run_in_threadpool(_send, edition_id, form.get("audience", ""), staff)


def _send(edition_id: int, shown: str, staff: Staff) -> Response:
    try:
        with transaction() as session:
            audience = sending.start_send(session, edition_id, by=staff.email)
    except PROBLEMS as exc:
        return redirect(_url(edition_id), f"Not sent: {exc}", "error")
    note = "" if shown == str(audience) else f" (the audience changed since the confirmation " \
                                             f"page showed {shown or '?'})"
    return redirect(_url(edition_id, "progress"),
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
        _act, edition_id, lambda s: sending.resume(s, edition_id, by=staff.email),
        "Resumed.", "progress")


@router.get("/{edition_id}/cancel", response_class=HTMLResponse)
def confirm_cancel(request: Request, edition_id: RowId,
                   staff: Staff = Depends(editor)) -> HTMLResponse:
    with transaction() as session:
        edition = _edition(session, edition_id)
        counts = sending.state_counts(session, edition_id)
        return admin_page(request, "cancel.html", staff, session=session, edition=edition,
                          waiting=counts.get("queued", 0) + counts.get("deferred", 0))


@router.post("/{edition_id}/cancel")
async def cancel(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    if form.get("confirm") != "yes":
        return redirect(_url(edition_id, "cancel"), "Confirm with the button.", "error")

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
            _edition(session, edition_id)
            said = action(session)
    except PROBLEMS as exc:
        return redirect(_url(edition_id, page), str(exc), "error")
    return redirect(_url(edition_id, page), said if isinstance(said, str) else done)


# --- watching a send ------------------------------------------------------------------------------


@router.get("/{edition_id}/progress", response_class=HTMLResponse)
def progress_page(request: Request, edition_id: RowId,
                  staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        edition = _edition(session, edition_id)
        progress = sending.progress(session, edition_id)
        return admin_page(request, "progress.html", staff, session=session, edition=edition,
                          progress=_with_clock(progress.as_dict()))


@router.get("/{edition_id}/progress.json")
def progress_json(edition_id: RowId, staff: Staff = Depends(viewer)) -> JSONResponse:
    with transaction() as session:
        _edition(session, edition_id)
        progress = sending.progress(session, edition_id).as_dict()
    return JSONResponse(_with_clock(progress), headers={"Cache-Control": "no-store"})


def _with_clock(progress: dict[str, Any]) -> dict[str, Any]:
    """The time of the figures, written by the server in the association's zone and 24 h
    clock (the browser's own clock would follow its locale: 9:00:05 AM)."""
    return {**progress, "as_of": format_clock(utcnow())}
