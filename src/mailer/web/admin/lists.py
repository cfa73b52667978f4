"""The admin's lists: every list with its subscriptions per status, a new list, one list's
settings (every field of a list) and archiving it.

Looking is every staff member's (the figures are counts); creating, changing and archiving
are editors'. The service (``lists.changes`` over ``lists.service``) checks the values and
writes the audit entries; a refusal is shown beside the form, nothing changed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailer.db import transaction
from mailer.lists import changes
from mailer.lists import service as lists
from mailer.lists.models import MailingList, NoTopicsPolicy, SubscriptionStatus
from mailer.web.admin.auth import AdminRefusal, Staff, editor, form_of, viewer
from mailer.web.admin.render import admin_page, redirect
from mailer.web.bounds import RowId

router = APIRouter(prefix="/admin/lists")
HERE = "/admin/lists"
STATUSES = [s.value for s in SubscriptionStatus]
#: The text fields of the form, as the service names them.
TEXTS = ("name", "description", "list_id", "from_address", "reply_to", "consent_text",
         "consent_version", "schedule_cron")


def list_or_404(session: Session, list_id: int) -> MailingList:
    found = lists.find(session, list_id)
    if found is None:
        raise AdminRefusal(404, f"There is no list {list_id}.")
    return found


def fields_of(form: dict[str, str]) -> dict[str, Any]:
    """The form's values as the service's fields (it checks them): text as typed, empty
    meaning the settings' value; the boxes; click tracking yes, no or the settings'."""
    fields: dict[str, Any] = {name: form.get(name, "") for name in TEXTS}
    fields["public"] = form.get("public") == "yes"
    fields["archive"] = form.get("archive") == "yes"
    fields["click_tracking"] = {"yes": True, "no": False}.get(form.get("click_tracking", ""))
    fields["no_topics"] = form.get("no_topics", NoTopicsPolicy.skip.value)
    position = form.get("position", "").strip()
    if position:
        if not (position.isascii() and position.lstrip("-").isdigit() and len(position) < 7):
            raise lists.ListError(f"the position is a whole number, not {position[:20]!r}")
        fields["position"] = int(position)
    return fields


def _index(request: Request, staff: Staff, status: int = 200, **context: Any) -> HTMLResponse:
    with transaction() as session:
        return admin_page(request, "lists.html", staff, status, session=session,
                          lists=lists.all_lists(session, archived=True),
                          counts=lists.subscription_counts(session), statuses=STATUSES,
                          policies=[p.value for p in NoTopicsPolicy], **context)


@router.get("", response_class=HTMLResponse)
def index(request: Request, staff: Staff = Depends(viewer)) -> HTMLResponse:
    return _index(request, staff, error="", form={})


@router.post("", response_class=HTMLResponse)
async def create(request: Request, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_create, request, form, staff)


def _create(request: Request, form: dict[str, str], staff: Staff) -> Response:
    try:
        with transaction() as session:
            fields = fields_of(form)
            lst = changes.create(session, by=staff.email, slug=form.get("slug", ""),
                                 name=fields.pop("name"), list_id=fields.pop("list_id"),
                                 **fields)
            list_id, slug = lst.id, lst.slug
    except lists.ListError as exc:
        return _index(request, staff, 422, error=str(exc), form=form)
    return redirect(f"{HERE}/{list_id}", f"List {slug} created.")


@router.get("/{list_id}", response_class=HTMLResponse)
def show(request: Request, list_id: RowId, staff: Staff = Depends(viewer)) -> HTMLResponse:
    return _show(request, staff, list_id, error="", form=None)


def _show(request: Request, staff: Staff, list_id: int, status: int = 200,
          **context: Any) -> HTMLResponse:
    with transaction() as session:
        lst = list_or_404(session, list_id)
        return admin_page(request, "list.html", staff, status, session=session, lst=lst,
                          counts=lists.subscription_counts(session).get(lst.id, {}),
                          statuses=STATUSES, policies=[p.value for p in NoTopicsPolicy],
                          default_id=_default_id(session), **context)


def _default_id(session: Session) -> int | None:
    try:
        return lists.default_list(session).id
    except lists.ListError:
        return None


@router.post("/{list_id}/edit", response_class=HTMLResponse)
async def edit(request: Request, list_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_edit, request, list_id, form, staff)


def _edit(request: Request, list_id: int, form: dict[str, str], staff: Staff) -> Response:
    here = f"{HERE}/{list_id}"
    try:
        with transaction() as session:
            lst = list_or_404(session, list_id)
            changed = changes.edit(session, lst, by=staff.email, **fields_of(form))
    except lists.ListError as exc:
        return _show(request, staff, list_id, 422, error=str(exc), form=form)
    return redirect(here, f"Changed: {', '.join(changed)}." if changed else "Nothing changed.")


@router.post("/{list_id}/archive")
async def archive(request: Request, list_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_archive, list_id, form.get("confirm", ""), staff)


def _archive(list_id: int, typed: str, staff: Staff) -> Response:
    here = f"{HERE}/{list_id}"
    with transaction() as session:
        lst = list_or_404(session, list_id)
        if typed.strip().lower() != lst.slug:
            return redirect(here, "To archive, type the list's slug exactly.", "error")
        if not changes.archive(session, lst, by=staff.email):
            return redirect(here, "That list was archived already.", "error")
        slug = lst.slug
    return redirect(HERE, f"List {slug} archived: no sign-ups and no new editions from now "
                    "on; its history stays.")
