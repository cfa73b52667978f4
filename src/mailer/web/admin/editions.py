"""The admin's editions: list, draft, edit, choose and order the articles, preview.

Sending one (test copies, schedule, send, pause, resume, cancel, watch) is in
``edition_sending``.

Thin routes: each reads its form, calls the editions or the sending service in one
transaction with the staff member's address as the actor (the service writes the audit
entry), and redirects back with a message (Post/Redirect/Get). The send's checks are
:func:`~mailer.delivery.preflight.preflight`'s, shown as they are. A refusal of the
service (an edition that cannot be sent, a window without articles) is shown as the
message; nothing changes then.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailer.bounces.rates import edition_rates
from mailer.config import get_settings
from mailer.db import transaction, utcnow
from mailer.delivery import service as sending
from mailer.delivery.preflight import Check, preflight
from mailer.delivery.queries import state_counts_of
from mailer.editions import queries
from mailer.editions import service as editions
from mailer.editions.compose import INTRO_HINT, category_order, reading_order, twice_greeted
from mailer.editions.models import Edition
from mailer.editions.states import EDITABLE, TransitionError
from mailer.lists import service as lists
from mailer.lists.models import MailingList
from mailer.localtime import last_day, zone_name
from mailer.staff.audit import recent
from mailer.web.admin.auth import AdminRefusal, Staff, editor, form_of, viewer
from mailer.web.admin.render import admin_page, headers, parse_date, redirect, zone
from mailer.web.bounds import RowId, id_or_none

router = APIRouter(prefix="/admin/editions")
#: Problems a staff member can act on; anything else is a bug and shows as a 500.
PROBLEMS = (editions.EditionError, sending.SendError, TransitionError, ValueError)
# (lists.ListError is a ValueError)


def edition_or_404(session: Session, edition_id: int) -> Edition:
    edition = session.get(Edition, edition_id)
    if edition is None:
        raise AdminRefusal(404, f"There is no edition {edition_id}.")
    return edition


def list_of(session: Session, edition: Edition) -> MailingList | None:
    """The list the edition goes to (the edition pages name it)."""
    return lists.find(session, edition.list_id)


def edition_url(edition_id: int, page: str = "") -> str:
    return f"/admin/editions/{edition_id}" + (f"/{page}" if page else "")


# --- the list, and a new draft ----------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def index(request: Request, staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        listing = queries.edition_list(session, limit=200)
        every = lists.all_lists(session, archived=True)
        # The lists a new edition may go to, each with the readers a send now would reach.
        open_lists = [(lst, sending.audience_size(session, lst.id)) for lst in every
                      if lst.archived_at is None]
        return admin_page(request, "editions.html", staff, session=session,
                          editions=listing.editions, articles=listing.articles,
                          counts=state_counts_of(session, [e.id for e in listing.editions]),
                          newest=queries.newest_articles(session), open_lists=open_lists,
                          list_names={lst.id: lst.name for lst in every},
                          default_id=open_lists[0][0].id if open_lists else None)


@router.post("")
async def draft(request: Request, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_draft, form, staff)


def _draft(form: dict[str, str], staff: Staff) -> Response:
    try:
        start = parse_date(form.get("since", ""), "start date")
        end = parse_date(form.get("until", ""), "end date", end_of_day=True)
        with transaction() as session:
            slug = form.get("list", "").strip().lower()
            # An unknown or archived list is the service's refusal (ListError).
            chosen = lists.lists_named(session, [slug])[0] if slug else None
            try:
                edition = editions.draft_edition(
                    session, subject=form.get("subject") or None, window_start=start,
                    window_end=end, by=staff.email, identity=get_settings().identity,
                    require_articles=True, mailing_list=chosen)
            except editions.EmptyWindow as exc:
                hint = queries.empty_window_hint(session, earlier="choose a start date before it",
                                                 none_yet="No article has been imported yet.",
                                                 zone=zone())
                return redirect("/admin/editions", f"{exc} {hint}", "error")
            edition_id, n = edition.id, len(edition.articles)
    except PROBLEMS as exc:
        return redirect("/admin/editions", str(exc), "error")
    return redirect(edition_url(edition_id), f"Edition {edition_id} drafted with {n} article(s).")


# --- one edition -----------------------------------------------------------------------------


@router.get("/{edition_id}", response_class=HTMLResponse)
def show(request: Request, edition_id: RowId, staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        edition = edition_or_404(session, edition_id)
        editable = edition.state in EDITABLE
        checked = (preflight(session, edition, settings=get_settings()) if editable
                   else None)
        articles = [link.article for link in edition.articles]
        filing = get_settings().articles
        ordered = reading_order(articles, edition.category_order, filing)
        candidates = editions.candidate_articles(session, edition) if editable else []
        counts = sending.state_counts(session, edition.id)
        audit = recent(session, target=f"edition:{edition.id}", limit=50)
        rates = edition_rates(session, edition.id, get_settings().sending) if counts else None
        return admin_page(
            request, "edition.html", staff, session=session, edition=edition, editable=editable,
            problem=checked.about(Check.content) if checked else None,
            hold=checked.about(Check.complaints) if checked else None, ordered=ordered,
            candidates=candidates, counts=counts,
            audit=audit, rates=rates, sections=category_order(edition.category_order, filing),
            window_since=edition.window_start.astimezone(zone()).date().isoformat(),
            window_until=last_day(edition.window_end, zone=zone()).isoformat(),
            audience=checked.audience if checked else edition.audience_count,
            zone_name=zone_name(utcnow(), zone=zone()), intro_hint=INTRO_HINT,
            variants=sending.variant_overview(session, edition),
            no_topics=_no_topics(session, edition),
            edition_list=list_of(session, edition),
        )


def _no_topics(session: Session, edition: Edition) -> str:
    found = lists.find(session, edition.list_id)
    return found.no_topics if found is not None else "skip"


@router.post("/{edition_id}/edit")
async def edit(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_edit, edition_id, form, staff)


def _edit(edition_id: int, form: dict[str, str], staff: Staff) -> Response:
    try:
        with transaction() as session:
            edition = edition_or_404(session, edition_id)
            categories = [c.strip() for c in form.get("categories", "").split(",") if c.strip()]
            editions.update_edition(
                session, edition, subject=form.get("subject", edition.subject),
                preheader=form.get("preheader", ""), intro=form.get("intro", ""),
                category_order=categories, by=staff.email, identity=get_settings().identity)
    except PROBLEMS as exc:
        return redirect(edition_url(edition_id), str(exc), "error")
    warning = twice_greeted(form.get("intro", ""))
    return redirect(edition_url(edition_id), f"Saved. {warning}" if warning else "Saved.")


@router.post("/{edition_id}/window")
async def window(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_window, edition_id, form, staff)


def _window(edition_id: int, form: dict[str, str], staff: Staff) -> Response:
    try:
        start = parse_date(form.get("since", ""), "start date")
        end = parse_date(form.get("until", ""), "end date", end_of_day=True)
        with transaction() as session:
            edition = edition_or_404(session, edition_id)
            editions.update_edition(session, edition, window_start=start, window_end=end,
                                    by=staff.email, identity=get_settings().identity)
            n = len(edition.articles)
    except PROBLEMS as exc:
        return redirect(edition_url(edition_id), str(exc), "error")
    return redirect(edition_url(edition_id), f"New window: {n} article(s) chosen from it.")


@router.post("/{edition_id}/articles")
async def articles(request: Request, edition_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_articles, edition_id, form, staff)


def _articles(edition_id: int, form: dict[str, str], staff: Staff) -> Response:
    action = form.get("action", "")
    article_id = id_or_none(form.get("article", ""))
    if article_id is None:
        return redirect(edition_url(edition_id), "Which article? The form named none.", "error")
    try:
        with transaction() as session:
            edition = edition_or_404(session, edition_id)
            if action == "add":
                editions.add_article(session, edition, article_id, by=staff.email)
            elif action == "drop":
                editions.drop_article(session, edition, article_id, by=staff.email)
            elif action in ("up", "down"):
                editions.step_article(session, edition, article_id, -1 if action == "up" else 1,
                                      by=staff.email, articles=get_settings().articles)
            else:
                return redirect(edition_url(edition_id), f"Unknown action {action[:20]!r}.",
                                "error")
    except PROBLEMS as exc:
        return redirect(edition_url(edition_id), str(exc), "error")
    return redirect(edition_url(edition_id) + "#articles")


# --- preview -------------------------------------------------------------------------------


def _variant(session: Session, edition: Edition, number: int | None
             ) -> sending.VariantView | None:
    """The preview's variant ``number`` (topics), None for the whole edition."""
    if number is None:
        return None
    for view in sending.variant_overview(session, edition):
        if view.number == number and number > 0:
            return view
    raise AdminRefusal(404, f"edition {edition.id} has no variant {number}")


VariantNumber = Annotated[int | None, Query(ge=1, le=100_000)]


@router.get("/{edition_id}/preview", response_class=HTMLResponse)
def preview(request: Request, edition_id: RowId, variant: VariantNumber = None,
            staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        edition = edition_or_404(session, edition_id)
        view = _variant(session, edition, variant)
        try:
            rendered = editions.render_preview(session, edition, settings=get_settings(),
                                               articles=view.article_ids if view else None)
        except editions.EditionError as exc:
            return admin_page(request, "refused.html", staff, 422, session=session,
                              message=str(exc))
        return admin_page(request, "preview.html", staff, session=session, edition=edition,
                          rendered=rendered, size=len(rendered.html.encode()), variant=view)


@router.get("/{edition_id}/preview.html", response_class=HTMLResponse)
def preview_html(edition_id: RowId, variant: VariantNumber = None,
                 staff: Staff = Depends(viewer)) -> HTMLResponse:
    """The mail's HTML exactly as a reader gets it, for the preview's frames."""
    with transaction() as session:
        edition = edition_or_404(session, edition_id)
        view = _variant(session, edition, variant)
        try:
            rendered = editions.render_preview(session, edition, settings=get_settings(),
                                               articles=view.article_ids if view else None)
        except editions.EditionError as exc:
            raise AdminRefusal(422, str(exc)) from None
    return HTMLResponse(rendered.html, headers={
        **headers(), "X-Frame-Options": "SAMEORIGIN",
        # What a mail program allows: no script, no form, images from anywhere.
        "Content-Security-Policy": "default-src 'none'; img-src https: data:; "
                                   "style-src 'unsafe-inline'; frame-ancestors 'self'; "
                                   "base-uri 'none'; form-action 'none'",
    })
