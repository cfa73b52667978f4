"""The admin's bounces: the latest, filtered by class and edition, each with its evidence
(the server's own words, how it was tied to a reader, what was done about it)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select

from mailer.bounces.models import Bounce, BounceClass
from mailer.db import transaction
from mailer.editions.models import Edition
from mailer.web.admin.auth import Staff, viewer
from mailer.web.admin.render import admin_page

router = APIRouter(prefix="/admin")
LIMIT = 200


@router.get("/bounces", response_class=HTMLResponse)
def bounces(request: Request, klass: str = "", edition: str = "",
            staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        query = select(Bounce).order_by(Bounce.id.desc()).limit(LIMIT)
        if klass in {c.value for c in BounceClass}:
            query = query.where(Bounce.bounce_class == klass)
        edition_id = int(edition) if edition.isdigit() else None
        if edition_id is not None:
            query = query.where(Bounce.edition_id == edition_id)
        rows = session.scalars(query).all()
        counts = dict(session.execute(
            select(Bounce.bounce_class, func.count())
            .where(*([Bounce.edition_id == edition_id] if edition_id is not None else []))
            .group_by(Bounce.bounce_class)).all())
        editions = session.execute(select(Edition.id, Edition.subject)
                                   .order_by(Edition.id.desc()).limit(50)).all()
        return admin_page(request, "bounces.html", staff, session=session, rows=rows, klass=klass,
                          edition_id=edition_id, counts=counts, editions=editions,
                          classes=[c.value for c in BounceClass], limit=LIMIT)
