"""The web archive: sent editions, and each one as the "view in browser" page.

The page is the edition's archive copy, frozen with its snapshot: the same content the
readers got, with no personal link in it (no unsubscribe link, no address, no name).
``/archive.xml`` is the same list as an Atom feed (feedgen), for feed readers and the
association's website: each entry links to the archive page and lists the edition's
articles with links to the website; nothing in it belongs to a reader.
"""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from feedgen.feed import FeedGenerator

from mailer.config import get_settings
from mailer.db import transaction
from mailer.editions import service, snapshot
from mailer.editions.models import Edition
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
             "date": format_date(e.finished_at or e.started_at or e.window_end,
                                 zone=get_settings().identity.zone)}
            for e in service.archived_editions(session)
        ]
    return page("archive.html", editions=editions)


@router.api_route("/archive.xml", methods=["GET", "HEAD"])
def archive_feed() -> Response:
    """The sent editions as Atom, newest first; a valid feed with no entry before the first."""
    with transaction() as session:
        body = _atom(service.archived_editions(session))
    return Response(body, media_type="application/atom+xml",
                    headers={"X-Content-Type-Options": "nosniff",
                             "Cache-Control": "public, max-age=300"})


def _atom(editions: list[Edition]) -> bytes:
    settings = get_settings()
    feed = FeedGenerator()
    feed.id(f"{settings.base_url}/archive")
    feed.title(f"{settings.identity.list_name}: editions")
    feed.author({"name": settings.identity.organisation_name})
    feed.link(href=f"{settings.base_url}/archive", rel="alternate", type="text/html")
    feed.link(href=f"{settings.base_url}/archive.xml", rel="self",
              type="application/atom+xml")
    feed.language("en")
    # feedgen prepends each entry it is given: add the oldest first so the newest leads.
    for edition in reversed(editions):
        url = snapshot.view_url(edition, settings.base_url)
        when = edition.finished_at or edition.started_at or edition.window_end
        entry = feed.add_entry()
        entry.id(url)
        entry.title(edition.subject_snapshot or edition.subject)
        entry.link(href=url, rel="alternate", type="text/html")
        entry.published(when)
        entry.updated(when)
        if edition.preheader:
            entry.summary(edition.preheader)
        entry.content(_entry_html(edition), type="html")
    if editions:
        newest = editions[0]
        feed.updated(newest.finished_at or newest.started_at or newest.window_end)
    return feed.atom_str(pretty=True)


def _entry_html(edition: Edition) -> str:
    """The edition's articles as links to the website: what the digest carries, without the
    greeting or the footer, which are the parts that name or address a reader."""
    items = "".join(
        f'<li><a href="{html.escape(ea.article.link)}">{html.escape(ea.article.title)}</a>'
        f"{': ' + html.escape(ea.article.summary_text) if ea.article.summary_text else ''}"
        "</li>"
        for ea in edition.articles)
    intro = "".join(f"<p>{html.escape(p)}</p>" for p in edition.intro.split("\n\n") if p.strip())
    return f"{intro}<ul>{items}</ul>"


@router.get("/archive/{slug}", response_class=HTMLResponse)
def archive_edition(slug: str) -> HTMLResponse:
    with transaction() as session:
        edition = service.archived_edition(session, slug)
        html = edition.archive_html if edition else None
    if html is None:
        return page("archive-missing.html", 404)
    return HTMLResponse(html, headers=_ARCHIVE_HEADERS)
