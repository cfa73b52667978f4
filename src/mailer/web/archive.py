"""The web archive: sent editions, and each one as the "view in browser" page.

The page is the edition's archive copy, frozen with its snapshot: the same content the
readers got, with no personal link in it (no unsubscribe link, no address, no name).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from mailer.db import transaction
from mailer.editions import service
from mailer.localtime import format_date
from mailer.web.pages import page

router = APIRouter()

#: The archive copy is our own HTML, but it carries feed content: let it load nothing but
#: https images, run nothing, and submit nothing.
_ARCHIVE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src https: data:; "
                               "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "public, max-age=300",
}


@router.get("/archive", response_class=HTMLResponse)
def archive_index() -> HTMLResponse:
    with transaction() as session:
        editions = [
            {"slug": e.slug, "subject": e.subject_snapshot or e.subject,
             "date": format_date(e.finished_at or e.started_at or e.window_end)}
            for e in service.archived_editions(session)
        ]
    return page("archive.html", editions=editions)


@router.get("/archive/{slug}", response_class=HTMLResponse)
def archive_edition(slug: str) -> HTMLResponse:
    with transaction() as session:
        edition = service.archived_edition(session, slug)
        html = edition.archive_html if edition else None
    if html is None:
        return page("archive-missing.html", 404)
    return HTMLResponse(html, headers=_ARCHIVE_HEADERS)
