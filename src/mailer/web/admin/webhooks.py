"""The admin's outgoing webhooks (editors only: the events carry readers' addresses): the
endpoints, a new one (its secret shown once, on the page that answers the form), an
endpoint's deliveries and attempt log (status, reply code, latency) with a Redeliver
button, enabling a disabled endpoint again, removing one. The services
(``webhooks.endpoints``, ``webhooks.sending``) check the values and write the audit entries.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mailer.config import get_settings
from mailer.db import transaction
from mailer.web.admin.auth import Staff, editor, form_of
from mailer.web.admin.render import admin_page, redirect
from mailer.web.bounds import RowId, id_or_none
from mailer.webhooks import endpoints, sending
from mailer.webhooks.events import EVENTS

router = APIRouter(prefix="/admin")
HERE = "/admin/webhooks"
#: Each event is a checkbox named ``event-<event>``.
EVENT_FIELD = "event-"


def _list_page(request: Request, staff: Staff, status: int = 200,
               **context: object) -> HTMLResponse:
    with transaction() as session:
        return admin_page(request, "webhooks.html", staff, status, session=session,
                          endpoints=endpoints.all_endpoints(session),
                          counts=sending.counts_by_endpoint(session), events=EVENTS, **context)


@router.get("/webhooks", response_class=HTMLResponse)
def webhooks(request: Request, staff: Staff = Depends(editor)) -> HTMLResponse:
    return _list_page(request, staff, made=None, error="", form={})


@router.post("/webhooks", response_class=HTMLResponse)
async def add(request: Request, staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_add, request, form, staff)


def _add(request: Request, form: dict[str, str], staff: Staff) -> Response:
    wanted = [e for e in EVENTS if form.get(EVENT_FIELD + e)]
    try:
        with transaction() as session:
            endpoint = endpoints.add(session, url=form.get("url", ""), events=wanted,
                                     by=staff.email, settings=get_settings().webhooks,
                                     description=form.get("description", ""))
            made = {"id": endpoint.id, "url": endpoint.url, "secret": endpoint.secret}
    except endpoints.EndpointError as exc:
        return _list_page(request, staff, 422, made=None, error=str(exc), form=form)
    # Shown on this answer only (no-store, not in a redirect's cookie or URL).
    return _list_page(request, staff, made=made, error="", form={})


@router.get("/webhooks/{endpoint_id}", response_class=HTMLResponse)
def endpoint_page(request: Request, endpoint_id: RowId,
                  staff: Staff = Depends(editor)) -> Response:
    with transaction() as session:
        try:
            endpoint = endpoints.get(session, endpoint_id)
        except endpoints.EndpointError as exc:
            return redirect(HERE, str(exc), "error")
        return admin_page(request, "webhook.html", staff, session=session, endpoint=endpoint,
                          deliveries=sending.deliveries_of(session, endpoint.id),
                          attempts=sending.attempts_of(session, endpoint.id))


@router.post("/webhooks/{endpoint_id}/remove")
async def remove(request: Request, endpoint_id: RowId,
                 staff: Staff = Depends(editor)) -> Response:
    await form_of(request, staff)
    return await run_in_threadpool(_remove, endpoint_id, staff)


def _remove(endpoint_id: int, staff: Staff) -> Response:
    try:
        with transaction() as session:
            url = endpoints.remove(session, endpoint_id, by=staff.email).url
    except endpoints.EndpointError as exc:
        return redirect(HERE, str(exc), "error")
    return redirect(HERE, f"Endpoint {url} removed: it hears of nothing more.")


@router.post("/webhooks/{endpoint_id}/enable")
async def enable(request: Request, endpoint_id: RowId,
                 staff: Staff = Depends(editor)) -> Response:
    await form_of(request, staff)
    return await run_in_threadpool(_enable, endpoint_id, staff)


def _enable(endpoint_id: int, staff: Staff) -> Response:
    here = f"{HERE}/{endpoint_id}"
    try:
        with transaction() as session:
            endpoints.enable(session, endpoint_id, by=staff.email)
    except endpoints.EndpointError as exc:
        return redirect(HERE, str(exc), "error")
    return redirect(here, "Enabled: what was still due is sent again now.")


@router.post("/webhooks/{endpoint_id}/redeliver")
async def redeliver(request: Request, endpoint_id: RowId,
                    staff: Staff = Depends(editor)) -> Response:
    form = await form_of(request, staff)
    return await run_in_threadpool(_redeliver, endpoint_id, form.get("delivery", ""), staff)


def _redeliver(endpoint_id: int, raw: str, staff: Staff) -> Response:
    here = f"{HERE}/{endpoint_id}"
    delivery_id = id_or_none(raw)
    if delivery_id is None:
        return redirect(here, "That is not a delivery of this endpoint.", "error")
    try:
        with transaction() as session:
            delivery = sending.redeliver(session, delivery_id, by=staff.email)
            if delivery.endpoint_id != endpoint_id:
                raise endpoints.EndpointError("That is not a delivery of this endpoint.")
    except endpoints.EndpointError as exc:
        return redirect(here, str(exc), "error")
    return redirect(here, f"Delivery {delivery_id} is queued again.")
