"""Importing articles from the admin (a file upload or a feed address) over HTTP against the
real web server: the command line's importer and report, for editors only, with CSRF,
in the audit log; bad input gets a clear answer and writes nothing."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select

from mailer.articles.models import Article
from mailer.db import transaction
from tests import test_admin, test_articles
from tests.support.admin import Admin, flash_of, make_staff
from tests.test_admin import CEP_FEED, EDITOR, audit
from tests.test_articles import FIXTURES

VIEWER = "viewer@cep-probation.example.org"
editor = test_admin.editor  # the fixtures: a logged-in editor, a feed server on loopback
feed_server = test_articles.feed_server


def _articles() -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(Article)) or 0


def _upload(admin: Admin, name: str, body: bytes, **data: str) -> object:
    return admin.http.post("/admin/articles", data={"csrf": admin.csrf, **data},
                           files={"file": (name, body, "application/octet-stream")})


def _report(page: str) -> str:
    match = re.search(r'<div class="card" id="report" role="status">(.*?)</div>', page, re.S)
    assert match, page[:2000]
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))


def test_upload_a_feed_file_twice(editor) -> None:
    page = editor.get("/admin/articles")
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.text
    first = _upload(editor, "cep-feed.xml", CEP_FEED.read_bytes())
    assert first.status_code == 200
    assert "upload:cep-feed.xml: 7 new, 0 updated, 0 unchanged" in _report(first.text)
    assert _articles() == 7
    # The list below the form shows them, newest first.
    assert first.text.index("Newsletter December 2025") < first.text.index("LIAISE2")
    again = _upload(editor, "cep-feed.xml", CEP_FEED.read_bytes())
    assert "0 new, 0 updated, 7 unchanged" in _report(again.text)
    assert _articles() == 7
    assert (EDITOR, "articles.import", "upload:cep-feed.xml") in audit()


def test_a_file_with_bad_items_imports_the_good_ones_and_names_the_bad(editor) -> None:
    answer = _upload(editor, "broken-feed.xml", (FIXTURES / "broken-feed.xml").read_bytes())
    report = _report(answer.text)
    assert "problem(s)" in report and "not well-formed XML" in report
    assert 'item 2 "An item without a link": no link; skipped' in report
    assert 'item 3 "An item without a date": no publication date; skipped' in report
    assert _articles() >= 1
    # A JSON item whose fields have the wrong types is one bad item, not an error page.
    weird = (b'{"items": [{"id": 1, "url": ["x"], "title": {"a": 1}, "tags": 5},'
             b' {"id": "ok", "url": "https://www.cep-probation.org/ok/", "title": "Fine",'
             b' "date_published": "2025-12-01T10:00:00+01:00"}]}')
    answer = _upload(editor, "odd.json", weird)
    assert answer.status_code == 200
    report = _report(answer.text)
    assert "1 new" in report and "item 1: a field has the wrong type" in report


@pytest.mark.parametrize("name, body", [
    ("not-a-feed.html", (FIXTURES / "not-a-feed.html").read_bytes()),
    ("empty.xml", b""),
    ("random.bin", bytes(range(256)) * 4),
    ("broken.json", b'{"items": [1, 2'),
])
def test_a_file_that_is_not_a_feed_is_refused(editor, name: str, body: bytes) -> None:
    answer = _upload(editor, name, body)
    assert answer.status_code == 303
    said = flash_of(editor.follow(answer).text)
    assert said.startswith(f"error: Nothing was imported: upload:{name}: not ")
    assert _articles() == 0
    assert not [a for a in audit() if a[1] == "articles.import"]


def test_import_from_a_feed_address(editor, feed_server) -> None:
    answer = editor.post("/admin/articles", {"url": f"{feed_server}/cep-feed.xml"})
    assert answer.status_code == 200
    assert f"{feed_server}/cep-feed.xml: 7 new" in _report(answer.text)
    assert (EDITOR, "articles.import", f"{feed_server}/cep-feed.xml") in audit()
    missing = editor.post("/admin/articles", {"url": f"{feed_server}/nothing.xml"})
    assert "HTTP 404" in flash_of(editor.follow(missing).text)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", str(CEP_FEED),
                                 "ftp://example.org/feed", "javascript:alert(1)"])
def test_only_web_addresses_are_fetched(editor, url: str) -> None:
    answer = editor.post("/admin/articles", {"url": url})
    said = flash_of(editor.follow(answer).text)
    assert said == "error: The feed's address must be a web address (https://…)."
    assert _articles() == 0


def test_one_source_at_a_time(editor) -> None:
    neither = editor.post("/admin/articles", {"url": "  "})
    assert "one of the two" in flash_of(editor.follow(neither).text)
    both = _upload(editor, "cep-feed.xml", CEP_FEED.read_bytes(),
                   url="https://www.cep-probation.org/feed/")
    assert "one of the two" in flash_of(editor.follow(both).text)
    assert _articles() == 0


def test_editors_only_and_csrf(clean, web, editor) -> None:
    forged = editor.http.post("/admin/articles", data={"csrf": "forged"},
                              files={"file": ("cep-feed.xml", CEP_FEED.read_bytes())})
    assert forged.status_code == 403
    no_token = editor.http.post("/admin/articles", data={"url": "https://example.org/"})
    assert no_token.status_code == 403
    make_staff(VIEWER, "viewer")
    viewer = Admin(web.url)
    try:
        assert viewer.login(VIEWER).status_code == 303
        listing = viewer.get("/admin/articles")
        assert listing.status_code == 200 and 'name="file"' not in listing.text
        refused = viewer.http.post("/admin/articles", data={"csrf": viewer.csrf},
                                   files={"file": ("cep-feed.xml", CEP_FEED.read_bytes())})
        assert refused.status_code == 403
    finally:
        viewer.close()
    anonymous = Admin(web.url)
    try:
        assert anonymous.get("/admin/articles").headers["location"].startswith("/admin/login")
    finally:
        anonymous.close()
    assert _articles() == 0
