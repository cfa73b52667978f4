"""The admin's articles: the newest ones, and importing more from a file or a feed address.

The import is the command line's (``mailer articles import``): ``feeds.load`` fetches an
address, so whatever it checks before and while fetching applies here too (this module
has no fetcher of its own), and ``feeds.parse`` reads an uploaded file;
``importer.import_feed`` stores the items and writes the audit entry in one transaction.
The page shows the same report as the command: new, updated, unchanged, and a warning per
item that could not be used.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mailer.articles import feeds
from mailer.articles.importer import ImportReport, import_feed
from mailer.articles.models import Article
from mailer.config import get_settings
from mailer.db import transaction
from mailer.web.admin.auth import AdminRefusal, Staff, editor, viewer
from mailer.web.admin.render import admin_page, redirect

router = APIRouter(prefix="/admin")
HERE = "/admin/articles"
NEWEST = 50
MAX_URL_CHARS = 2000
#: An uploaded feed file: the size a fetched feed may have.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024


def _page(request: Request, staff: Staff, status: int = 200, **context: object) -> HTMLResponse:
    with transaction() as session:
        newest = session.scalars(select(Article).order_by(
            Article.published_at.desc(), Article.id.desc()).limit(NEWEST)).all()
        total = session.scalar(select(func.count()).select_from(Article)) or 0
        context.setdefault("report", None)
        return admin_page(request, "articles.html", staff, status, session=session,
                          newest=newest, total=total, **context)


@router.get("/articles", response_class=HTMLResponse)
def articles(request: Request, staff: Staff = Depends(viewer)) -> HTMLResponse:
    return _page(request, staff)


@router.post("/articles", response_class=HTMLResponse)
async def import_articles(request: Request, staff: Staff = Depends(editor)) -> Response:
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > MAX_UPLOAD_BYTES + 65536:
        raise AdminRefusal(413, f"The file is over {MAX_UPLOAD_BYTES // 2**20} MB.")
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception:  # any parse error of a multipart or urlencoded body
        raise AdminRefusal(400, "The form could not be read. Reload the page and try again.") \
            from None
    token = form.get("csrf")
    if not (isinstance(token, str) and secrets.compare_digest(token.encode(),
                                                                staff.csrf.encode())):
        raise AdminRefusal(403, "This form has expired or did not come from this site. "
                                "Go back, reload the page and try again.")
    upload = form.get("file")
    url = form.get("url")
    url = url.strip() if isinstance(url, str) else ""
    has_file = isinstance(upload, UploadFile) and bool(upload.filename)
    if has_file == bool(url):
        return redirect(HERE, "Choose a file, or give a feed's address (one of the two).",
                        "error")
    if has_file:
        assert isinstance(upload, UploadFile)
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise AdminRefusal(413, f"The file is over {MAX_UPLOAD_BYTES // 2**20} MB.")
        name = (upload.filename or "file")[:200]
        outcome = await run_in_threadpool(_import_file, data, name, staff)
    else:
        if len(url) > MAX_URL_CHARS or not feeds.is_web_address(url):
            return redirect(HERE, "The feed's address must be a web address (https://…).",
                            "error")
        outcome = await run_in_threadpool(_import_url, url, staff)
    if isinstance(outcome, str):
        return redirect(HERE, f"Nothing was imported: {outcome}", "error")
    return _page(request, staff, report=outcome)


def _import_file(data: bytes, name: str, staff: Staff) -> ImportReport | str:
    # The name is what the feed is known by in the articles' source and the audit log; the
    # ending still tells JSON from XML, as with a file given to the command line.
    try:
        settings = get_settings()
        feed = feeds.parse(data, source=f"upload:{name}", articles=settings.articles,
                           website_url=settings.identity.website_url)
    except feeds.FeedError as exc:
        return str(exc)
    return _store(feed, staff)


def _import_url(url: str, staff: Staff) -> ImportReport | str:
    try:
        # The network stays outside the transaction.
        settings = get_settings()
        feed = feeds.load(url, settings.articles, website_url=settings.identity.website_url)
    except feeds.FeedError as exc:
        return str(exc)
    return _store(feed, staff)


def _store(feed: feeds.Feed, staff: Staff) -> ImportReport:
    with transaction() as session:
        return import_feed(session, feed, by=staff.email)
