"""The admin's ops view and audit log (every staff member may look).

The ops page is the same snapshot as ``mailer status`` and ``/metrics``: queues, workers,
editions under way, alerts, plus what the workers counted (SMTP replies, task failures
and retries) and the readiness checks.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from mailer.config import get_settings
from mailer.db import transaction
from mailer.ops import status
from mailer.paths import templates_dir
from mailer.staff.audit import recent
from mailer.web.admin.auth import Staff, viewer
from mailer.web.admin.render import admin_page, headers
from mailer.web.bounds import MAX_ID

router = APIRouter(prefix="/admin")


@router.get("/ops", response_class=HTMLResponse)
def ops(request: Request, staff: Staff = Depends(viewer)) -> HTMLResponse:
    # The very snapshot ``mailer status`` shows.
    snapshot = status.full_snapshot(get_settings())
    return admin_page(request, "ops.html", staff, snapshot=snapshot, smtp=snapshot.smtp,
                      tasks=snapshot.tasks, checks=snapshot.checks, schedule=snapshot.schedule,
                      banner=snapshot.alerts)


@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request, actor: str = "", action: str = "", before: int = 0,
          staff: Staff = Depends(viewer)) -> HTMLResponse:
    with transaction() as session:
        entries = recent(session, limit=100, actor=actor.strip() or None,
                         action=action.strip() or None,
                         before_id=before if 0 < before <= MAX_ID else None)
        return admin_page(request, "audit.html", staff, session=session, entries=entries,
                          actor=actor, action=action)


@router.get("/assets/admin.js")
def script() -> Response:
    body = (templates_dir() / "web" / "admin" / "admin.js").read_bytes()
    return Response(body, media_type="text/javascript; charset=utf-8",
                    headers={**headers(), "Cache-Control": "public, max-age=300"})
