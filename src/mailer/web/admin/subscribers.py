"""The admin's subscribers and suppression list (editors only: this is personal data).

Search by address or name; a subscriber's status, consent history, suppression and
bounces; the GDPR export (JSON) and erasure; suppress and lift; import a CSV; export the
list as CSV. Every change and every export is in the audit log: the subscribers service
writes the entries of changes (so the CLI's are there too), the routes those of exports.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mailer import privacy
from mailer.bounces.models import Bounce
from mailer.config import get_settings
from mailer.db import transaction
from mailer.delivery.history import editions_sent
from mailer.lists import service as lists
from mailer.lists.models import MailingList, Subscription, SubscriptionStatus
from mailer.staff.audit import record
from mailer.subscribers import importer
from mailer.subscribers.addresses import InvalidAddress, key_hash
from mailer.subscribers.models import (
    ConsentEvent,
    Subscriber,
    SuppressionReason,
)
from mailer.suppression import queries as suppression_queries
from mailer.suppression import service as suppression_service
from mailer.web.admin.auth import AdminRefusal, Staff, editor, form_of
from mailer.web.admin.render import admin_page, headers, redirect
from mailer.web.bounds import RowId, page_number

router = APIRouter(prefix="/admin")
PAGE = 50
MAX_IMPORT_BYTES = 20 * 1024 * 1024
EXPORT_FIELDS = ["email", "first_name", "last_name", "organisation", "country", "status",
                 "source", "created_at", "confirmed_at", "unsubscribed_at"]
_OF_SUBSCRIPTION = {"status", "confirmed_at", "unsubscribed_at"}
STATUSES = tuple(s.value for s in SubscriptionStatus)


@router.get("/subscribers", response_class=HTMLResponse)
def search(request: Request, q: str = "", status: str = "", page: int = 1,
           list_slug: str = Query("", alias="list", max_length=60),
           staff: Staff = Depends(editor)) -> HTMLResponse:
    q, page = q.strip()[:200], page_number(page)
    with transaction() as session:
        on_list = lists.by_slug(session, list_slug.strip().lower()) if list_slug else None
        query = select(Subscriber)
        if q:
            needle = q.casefold()
            query = query.where(or_(
                func.lower(Subscriber.email).contains(needle, autoescape=True),
                func.lower(Subscriber.first_name + " " + Subscriber.last_name)
                .contains(needle, autoescape=True),
                func.lower(Subscriber.organisation).contains(needle, autoescape=True)))
        held = [Subscription.subscriber_id == Subscriber.id]
        if on_list is not None:  # on that list (in ``status`` there, when given)
            held.append(Subscription.list_id == on_list.id)
        if status in STATUSES:
            held.append(Subscription.status == status)
        if len(held) > 1:
            query = query.where(exists().where(*held))
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(Subscriber.id.desc())
                               .offset((page - 1) * PAGE).limit(PAGE)).all()
        counted = select(Subscription.status, func.count()).group_by(Subscription.status)
        if on_list is not None:
            counted = counted.where(Subscription.list_id == on_list.id)
        by_status = dict(session.execute(counted).all())
        return admin_page(request, "subscribers.html", staff, session=session, rows=rows, q=q,
                          status=status, total=total, page=page, pages=max(1, -(-total // PAGE)),
                          by_status=by_status, statuses=list(STATUSES),
                          lists=lists.all_lists(session, archived=True),
                          on_list=on_list.slug if on_list else "",
                          on_lists=_on_lists(session, [s.id for s in rows]))


def _on_lists(session: Session, ids: list[int]) -> dict[int, list[tuple[str, str]]]:
    """Subscriber → (list name, status) of each of their subscriptions."""
    found: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
    if ids:
        for subscriber_id, name, status in session.execute(
                select(Subscription.subscriber_id, MailingList.name, Subscription.status)
                .join(MailingList, MailingList.id == Subscription.list_id)
                .where(Subscription.subscriber_id.in_(ids))
                .order_by(MailingList.position, MailingList.id)):
            found[subscriber_id].append((name, status))
    return found


def _subscriber(session: object, subscriber_id: int) -> Subscriber:
    subscriber = session.get(Subscriber, subscriber_id)  # type: ignore[attr-defined]
    if subscriber is None:
        raise AdminRefusal(404, "There is no such subscriber (erased, or never there).")
    return subscriber  # type: ignore[no-any-return]


@router.get("/subscribers/{subscriber_id}", response_class=HTMLResponse)
def detail(request: Request, subscriber_id: RowId, staff: Staff = Depends(editor)) -> HTMLResponse:
    with transaction() as session:
        subscriber = _subscriber(session, subscriber_id)
        events = session.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == subscriber.id).order_by(ConsentEvent.id)).all()
        suppression = suppression_queries.suppression_of(session, subscriber.address_hash)
        bounces = session.scalars(select(Bounce).where(Bounce.subscriber_id == subscriber.id)
                                  .order_by(Bounce.id.desc()).limit(50)).all()
        sent = editions_sent(session, subscriber.id, limit=200)
        subscriptions = session.execute(
            select(Subscription, MailingList)
            .join(MailingList, MailingList.id == Subscription.list_id)
            .where(Subscription.subscriber_id == subscriber.id)
            .order_by(MailingList.position, MailingList.id)).all()
        return admin_page(request, "subscriber.html", staff, session=session, subscriber=subscriber,
                          events=events, suppression=suppression, bounces=bounces, sent=sent,
                          subscriptions=subscriptions)


@router.get("/subscribers/{subscriber_id}/export.json")
def export_one(subscriber_id: RowId, staff: Staff = Depends(editor)) -> Response:
    with transaction() as session:
        subscriber = _subscriber(session, subscriber_id)
        data = privacy.export(session, subscriber, by=staff.email)  # audited there
    return Response(json.dumps(data, indent=2, ensure_ascii=False), media_type="application/json",
                    headers={**headers(), "Content-Disposition":
                             f'attachment; filename="subscriber-{subscriber_id}.json"'})


@router.post("/subscribers/{subscriber_id}/erase")
async def erase(request: Request, subscriber_id: RowId, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_erase, subscriber_id, form.get("confirm", ""), staff)


def _erase(subscriber_id: int, typed: str, staff: Staff) -> Response:
    here = f"/admin/subscribers/{subscriber_id}"
    with transaction() as session:
        subscriber = _subscriber(session, subscriber_id)
        if typed.strip().casefold() != subscriber.email.casefold():
            return redirect(here, "To erase, type the subscriber's address exactly.", "error")
        privacy.erase(session, subscriber, by=staff.email)  # audited there
    return redirect("/admin/subscribers", "Erased. Only a hashed suppression entry is kept, so "
                    "the address is never mailed again.")


@router.post("/subscribers/{subscriber_id}/suppress")
async def suppress(request: Request, subscriber_id: RowId,
                   staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_suppress, subscriber_id, form, staff)


def _suppress(subscriber_id: int, form: dict[str, str], staff: Staff) -> Response:
    here = f"/admin/subscribers/{subscriber_id}"
    with transaction() as session:
        subscriber = _subscriber(session, subscriber_id)
        if form.get("lift") == "yes":
            try:
                done = suppression_service.unsuppress(session, subscriber.address_hash,
                                                      by=staff.email)
            except suppression_service.ErasureKept as exc:
                return redirect(here, str(exc), "error")
            message = "Lifted from the suppression list."
        else:
            evidence = form.get("evidence", "").strip()[:1000] or f"by {staff.email}"
            done = suppression_service.suppress(session, subscriber.address_hash,
                                                reason=SuppressionReason.manual, evidence=evidence,
                                                by=staff.email)
            message = "Suppressed: never mailed again."
        if not done:
            return redirect(here, "Nothing to change.", "error")
    return redirect(here, message)


# --- import and export ---------------------------------------------------------------------


@router.get("/subscribers-import", response_class=HTMLResponse)
def import_form(request: Request, staff: Staff = Depends(editor)) -> HTMLResponse:
    return admin_page(request, "import.html", staff, report=None, columns=importer.COLUMNS,
                      imported_to="", **_import_lists())


def _import_lists() -> dict[str, Any]:
    """The lists an import may go to (private ones too), and the default one."""
    with transaction() as session:
        open_lists = [(lst.slug, lst.name, lst.public) for lst in lists.all_lists(session)]
        return {"lists": open_lists, "default_slug": lists.default_list(session).slug}


@router.post("/subscribers-import", response_class=HTMLResponse)
async def import_csv(request: Request, staff: Staff = Depends(editor)) -> Response:
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > MAX_IMPORT_BYTES:
        raise AdminRefusal(413, f"The file is over {MAX_IMPORT_BYTES // 2**20} MB; split it.")
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception:
        raise AdminRefusal(400, "The upload could not be read. Try again.") from None
    token = form.get("csrf")
    if not (isinstance(token, str) and secrets.compare_digest(token.encode(),
                                                                staff.csrf.encode())):
        raise AdminRefusal(403, "This form has expired or did not come from this site. "
                                "Go back, reload the page and try again.")
    upload = form.get("file")
    source = str(form.get("source") or "").strip()[:80] or "admin import"
    list_slug = str(form.get("list") or "").strip()[:60]
    if not isinstance(upload, UploadFile) or not upload.filename:
        return redirect("/admin/subscribers-import", "Choose a CSV file to import.", "error")
    raw = await upload.read(MAX_IMPORT_BYTES + 1)
    if len(raw) > MAX_IMPORT_BYTES:
        raise AdminRefusal(413, f"The file is over {MAX_IMPORT_BYTES // 2**20} MB; split it.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return redirect("/admin/subscribers-import", "The file is not UTF-8 text. Save it as "
                        "“CSV UTF-8” and import it again; nothing was imported.", "error")
    name = upload.filename[:100]
    report = await run_in_threadpool(_import, text, source, name, list_slug, staff)
    if isinstance(report, str):
        return redirect("/admin/subscribers-import", report, "error")
    return admin_page(request, "import.html", staff, report=report, filename=name,
                      columns=importer.COLUMNS, imported_to=list_slug,
                      **await run_in_threadpool(_import_lists))


def _import(text: str, source: str, filename: str, list_slug: str,
            staff: Staff) -> importer.ImportReport | str:
    try:
        with transaction() as session:  # the list chosen (the default one for none)
            list_id = (lists.lists_named(session, [list_slug.lower()])[0] if list_slug
                       else lists.default_list(session)).id
        rows = importer.read_csv(io.StringIO(text, newline=""))
        # audited there
        report = importer.import_rows(
            rows, source=source, by=staff.email, name=filename, list_id=list_id,
            check_deliverability=get_settings().signup.check_deliverability)
    except ValueError as exc:  # ListError included
        return f"Nothing was imported: {exc}"
    return report


@router.get("/subscribers-export.csv")
def export_all(status: str = "", list_slug: str = Query("", alias="list", max_length=60),
               staff: Staff = Depends(editor)) -> Response:
    """A list's subscribers (``?list=``; the default list's without), with its status and
    times; archived lists too."""
    with transaction() as session:
        lst = lists.by_slug(session, list_slug.strip().lower()) if list_slug \
            else lists.default_list(session)
        if lst is None:
            raise AdminRefusal(404, f"There is no list {list_slug[:60]!r}.")
        list_id, slug = lst.id, lst.slug
        record(session, actor=staff.email, action="subscribers.export",
               detail={"status": status or "all", "list": slug})
    return StreamingResponse(_csv_rows(status, list_id), media_type="text/csv; charset=utf-8",
                             headers={**headers(), "Content-Disposition":
                                      f'attachment; filename="subscribers-{slug}.csv"'})


def _csv_rows(status: str, list_id: int) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    with transaction() as session:
        # The list's subscribers, with its status and times.
        query = (select(Subscriber, Subscription)
                 .join(Subscription, Subscription.subscriber_id == Subscriber.id)
                 .where(Subscription.list_id == list_id)
                 .order_by(Subscriber.id))
        if status in STATUSES:
            query = query.where(Subscription.status == status)
        for subscriber, held in session.execute(query.execution_options(yield_per=1000)):
            writer.writerow([_cell(getattr(held if f in _OF_SUBSCRIPTION else subscriber, f))
                             for f in EXPORT_FIELDS])
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


def _cell(value: object) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP's CSV injection advice)."""
    text = value.isoformat() if hasattr(value, "isoformat") else "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# --- the suppression list ------------------------------------------------------------------


@router.get("/suppressions", response_class=HTMLResponse)
def suppressions(request: Request, reason: str = "", q: str = "",
                 staff: Staff = Depends(editor)) -> HTMLResponse:
    with transaction() as session:
        error, address_hash = "", None
        if q.strip():
            try:
                address_hash = key_hash(q.strip())
            except InvalidAddress as exc:
                error = str(exc)
        rows = [] if error else suppression_queries.suppressions(
            session, reason=reason or None, address_hash=address_hash, limit=500)
        counts = suppression_queries.suppression_counts(session)
        return admin_page(request, "suppressions.html", staff, session=session, rows=rows,
                          reason=reason, q=q, error=error, counts=counts,
                          reasons=[r.value for r in SuppressionReason])


@router.post("/suppressions")
async def add_suppression(request: Request, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_add_suppression, form, staff)


def _add_suppression(form: dict[str, str], staff: Staff) -> Response:
    try:
        hash_ = key_hash(form.get("email", ""))
    except InvalidAddress as exc:
        return redirect("/admin/suppressions", str(exc), "error")
    evidence = form.get("evidence", "").strip()[:1000] or f"added by {staff.email}"
    with transaction() as session:
        done = suppression_service.suppress(session, hash_, reason=SuppressionReason.manual,
                                            evidence=evidence, by=staff.email)
    return redirect("/admin/suppressions", "Suppressed: never mailed again." if done
                    else "That address was suppressed already.", "ok" if done else "error")


@router.post("/suppressions/remove")
async def remove_suppression(request: Request, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_remove_suppression, form.get("hash", ""), staff)


def _remove_suppression(hash_: str, staff: Staff) -> Response:
    with transaction() as session:
        row = suppression_queries.suppression_of(session, hash_)
        if row is None:
            return redirect("/admin/suppressions", "That entry is not on the list.", "error")
        try:
            suppression_service.unsuppress(session, hash_, by=staff.email)
        except suppression_service.ErasureKept as exc:
            return redirect("/admin/suppressions", str(exc), "error")
    return redirect("/admin/suppressions", "Removed from the suppression list. The address "
                    "gets newsletters again only as a confirmed subscriber.")
