"""A list's topics (editors only): the article categories its readers choose from, each
renamed, merged into another, hidden or shown again. ``mailer.lists.topics`` checks the
values and writes the audit entries; the page finds new categories each time it opens.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailer.config import get_settings
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists import topics
from mailer.lists.models import MailingList, Topic
from mailer.web.admin.auth import Staff, editor, form_of
from mailer.web.admin.render import admin_page, redirect
from mailer.web.bounds import RowId, id_or_none

router = APIRouter(prefix="/admin/lists")
ACTIONS = ("rename", "merge", "unmerge", "hide", "show")


class _Missing(Exception):
    pass


def _list(session: Session, list_id: int) -> MailingList:
    found = lists.find(session, list_id)
    if found is None:
        raise _Missing
    return found


@router.get("/{list_id}/topics", response_class=HTMLResponse)
def topics_page(request: Request, list_id: RowId, staff: Staff = Depends(editor)) -> Response:
    with transaction() as session:
        try:
            lst = _list(session, list_id)
        except _Missing:
            return redirect("/admin/lists", "There is no such list.", "error")
        topics.sync(session, lst.id, unfiled=get_settings().articles.unfiled_categories)
        rows = topics.all_topics(session, lst.id)
        labels = {t.id: t.label for t in rows}
        views = topics.catalogue(session, lst.id)
        return admin_page(request, "topics.html", staff, session=session, lst=lst,
                          topics=rows, labels=labels, views=views,
                          targets=views)


@router.post("/{list_id}/topics/{topic_id}/{action}")
async def change(request: Request, list_id: RowId, topic_id: RowId, action: str,
                 staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_change, list_id, topic_id, action, form, staff)


def _change(list_id: int, topic_id: int, action: str, form: dict[str, str],
            staff: Staff) -> Response:
    here = f"/admin/lists/{list_id}/topics"
    if action not in ACTIONS:
        return redirect(here, "There is no such change of a topic.", "error")
    try:
        with transaction() as session:
            if lists.find(session, list_id) is None:
                return redirect("/admin/lists", "There is no such list.", "error")
            topic = session.get(Topic, topic_id)
            if topic is None or topic.list_id != list_id:
                raise topics.TopicError("That is not a topic of this list.")
            message = _apply(session, topic, action, form, staff.email)
    except topics.TopicError as exc:
        return redirect(here, str(exc), "error")
    return redirect(here, message)


def _apply(session: Session, topic: Topic, action: str, form: dict[str, str],
           by: str) -> str:
    if action == "rename":
        topics.rename(session, topic, form.get("label", ""), by=by)
        return f"{topic.category} is shown as {topic.label!r}."
    if action == "merge":
        into_id = id_or_none(form.get("into", ""))
        into = session.get(Topic, into_id) if into_id is not None else None
        if into is None or into.list_id != topic.list_id:
            raise topics.TopicError("Choose the topic to merge it into.")
        target = topics.merge(session, topic, into, by=by)
        return f"{topic.label} is part of {target.label} now."
    if action == "unmerge":
        topics.unmerge(session, topic, by=by)
        return f"{topic.label} is a topic of its own again."
    topics.hide(session, topic, action == "hide", by=by)
    return (f"{topic.label} is hidden: no reader is offered it." if action == "hide"
            else f"{topic.label} is offered to readers again.")
