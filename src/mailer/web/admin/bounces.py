"""The admin's bounces: the latest, filtered by class, edition and trust, each with its
evidence (the server's own words, how it was tied to a reader, what was done about it).

A bounce that arrived by mail and that nothing we signed ties to a message we sent is
*unverified*: it acted on nobody. An editor can confirm one here (after reading its
evidence); it then acts exactly as a verified one would, once, and the audit log says who
confirmed it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select

from mailer.bounces.actions import NotConfirmable, confirm_bounce
from mailer.bounces.models import Bounce, BounceClass, Trust
from mailer.config import get_settings
from mailer.db import transaction
from mailer.editions.models import Edition
from mailer.subscribers.models import Subscriber
from mailer.web.admin.auth import Staff, editor, form_of, viewer
from mailer.web.admin.render import admin_page, redirect
from mailer.web.bounds import RowId, id_or_none

router = APIRouter(prefix="/admin")
LIMIT = 200
TRUSTS = {"verified": Trust.verified, "unverified": Trust.unverified,
          "confirmed": Trust.confirmed}


@router.get("/bounces", response_class=HTMLResponse)
def bounces(request: Request, klass: str = "", edition: str = "", trust: str = "",
            staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        query = select(Bounce).order_by(Bounce.id.desc()).limit(LIMIT)
        if klass in {c.value for c in BounceClass}:
            query = query.where(Bounce.bounce_class == klass)
        edition_id = id_or_none(edition)
        if edition_id is not None:
            query = query.where(Bounce.edition_id == edition_id)
        if trust in TRUSTS:
            query = query.where(Bounce.trust == TRUSTS[trust])
        rows = session.scalars(query).all()
        counts = dict(session.execute(
            select(Bounce.bounce_class, func.count())
            .where(*([Bounce.edition_id == edition_id] if edition_id is not None else []))
            .group_by(Bounce.bounce_class)).all())
        trust_counts = dict(session.execute(
            select(Bounce.trust, func.count()).group_by(Bounce.trust)).all())
        named = {sid: email for sid, email in session.execute(
            select(Subscriber.id, Subscriber.email).where(Subscriber.id.in_(
                {b.claimed_subscriber_id for b in rows if b.claimed_subscriber_id})))}
        editions = session.execute(select(Edition.id, Edition.subject)
                                   .order_by(Edition.id.desc()).limit(50)).all()
        return admin_page(request, "bounces.html", staff, session=session, rows=rows, klass=klass,
                          edition_id=edition_id, counts=counts, editions=editions,
                          classes=[c.value for c in BounceClass], limit=LIMIT, trust=trust,
                          trusts=list(TRUSTS), trust_counts=trust_counts, named=named)


@router.post("/bounces/{bounce_id}/confirm")
async def confirm(request: Request, bounce_id: RowId, staff: Staff = Depends(editor)) -> Response:
    await form_of(request, staff)
    return await run_in_threadpool(_confirm, bounce_id, staff)


def _confirm(bounce_id: int, staff: Staff) -> Response:
    back = "/admin/bounces?trust=unverified"
    with transaction() as session:
        try:
            bounce = confirm_bounce(session, bounce_id, by=staff.email,  # audited there
                                    bounces=get_settings().bounces)
        except NotConfirmable as exc:
            return redirect(back, f"Nothing done: {exc}.", "error")
        action = bounce.action
    return redirect(back, f"Bounce #{bounce_id} confirmed: {action}.")
