"""Importing the website's articles: RSS, Atom and JSON, idempotent, sanitised, and honest
about the items it could not use."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer.articles import feeds
from mailer.articles.feeds import FeedError, load
from mailer.articles.importer import import_feed
from mailer.articles.models import Article
from mailer.articles.sanitise import clean_html, excerpt, html_to_text
from mailer.config import ArticleSettings, IdentitySettings
from mailer.db import transaction
from tests.conftest import wait_for
from tests.support.processes import Worker

SITE = IdentitySettings().website_url  # the association's own site (feeds.load)
ROOT = Path(__file__).resolve().parents[1]
CEP_FEED = ROOT / "tests" / "fixtures" / "cep-feed.xml"  # copy of shared/fixtures
FIXTURES = ROOT / "tests" / "fixtures"

ACTIVE_CONTENT = re.compile(
    r"<script|<style|<iframe|<form|<svg|<math|<img|<object|\son\w+\s*="
    r"|=\s*[\"']?\s*(?:javascript|data|vbscript):", re.IGNORECASE)


#: The feed server of these tests listens on 127.0.0.1, which a fetch may then reach.
LOOPBACK = ArticleSettings(feed_allowed_hosts=["127.0.0.1"])


def _import(path: Path | str) -> object:
    feed = load(str(path), LOOPBACK, website_url=SITE)
    with transaction() as session:
        return import_feed(session, feed)


def _articles() -> dict[str, Article]:
    with transaction() as session:
        return {a.guid: a for a in session.scalars(select(Article))}


# --- the association's feed ------------------------------------------------------------------

def test_fixture_feed_imports_seven_articles_with_their_categories(clean) -> None:
    report = _import(CEP_FEED)
    assert (report.created, report.updated, report.problems) == (7, 0, [])

    articles = _articles()
    assert len(articles) == 7
    bridging = articles["https://www.cep-probation.org/?p=40297"]
    assert bridging.categories == ["Reading corner", "Criminal Justice"]
    assert bridging.title.startswith("Bridging Research and Practice in Forensic Social Work")
    assert "–" in bridging.title  # &#8211; decoded, not left as an entity
    assert bridging.link == "https://www.cep-probation.org/bridging-research-and-practice-in-forensic-social-work/"
    assert bridging.author == "CEP"
    assert bridging.published_at == dt.datetime(2025, 12, 17, 14, 3, 11, tzinfo=dt.UTC)
    assert {a.categories[0] for a in articles.values()} == {
        "Uncategorized", "Reading corner", "Mental Health", "Partners", "Human rights and ethics",
        "CEP Events", "News"}

    # WordPress residue is gone; the article's own words stay.
    newsletter = articles["https://www.cep-probation.org/?p=40311"]
    assert "appeared first on" not in newsletter.summary_html
    assert "The post" not in newsletter.summary_text
    assert newsletter.summary_text.startswith("CEP’s latest newsletter is out now!")
    assert not newsletter.summary_text.endswith("Read here")
    # Every summary is sanitised HTML with text to go with it.
    for article in articles.values():
        assert not ACTIVE_CONTENT.search(article.summary_html)
        assert article.summary_text and "<" not in article.summary_text


def test_second_import_changes_nothing(clean) -> None:
    _import(CEP_FEED)
    before = {guid: (a.id, a.updated_at, a.content_hash) for guid, a in _articles().items()}

    again = _import(CEP_FEED)

    assert (again.created, again.updated, again.unchanged) == (0, 0, 7)
    after = {guid: (a.id, a.updated_at, a.content_hash) for guid, a in _articles().items()}
    assert after == before


def test_a_changed_item_is_updated_not_duplicated(clean, tmp_path) -> None:
    _import(CEP_FEED)
    changed = CEP_FEED.read_text(encoding="utf-8").replace(
        "Memorandum of Understanding Signed Between CEP and RESCALED",
        "Memorandum of Understanding signed between CEP and RESCALED (updated)")
    (tmp_path / "feed.xml").write_text(changed, encoding="utf-8")

    report = _import(tmp_path / "feed.xml")

    assert (report.created, report.updated, report.unchanged) == (0, 1, 6)
    articles = _articles()
    assert len(articles) == 7
    assert articles["https://www.cep-probation.org/?p=40240"].title.endswith("(updated)")


# --- hostile, broken, and other shapes of feed -------------------------------------------

def test_hostile_items_come_out_clean(clean) -> None:
    report = _import(FIXTURES / "hostile-feed.xml")
    assert report.created == 2

    articles = _articles()
    scripted = articles["https://www.cep-probation.org/?p=90001"]
    assert scripted.title == "Scripted headline"
    html = scripted.summary_html
    assert not ACTIVE_CONTENT.search(html), html
    assert "document.cookie" not in html and "display:none" not in html
    assert "Before" in html and "after." in html  # the text around the script stays
    # The relative link is made absolute; the javascript: and data: links lose their href.
    assert 'href="https://www.cep-probation.org/relative/page/"' in html
    assert re.findall(r'href="([^"]*)"', html) == ["https://www.cep-probation.org/relative/page/"]
    assert scripted.image_url is None or scripted.image_width is None  # a pixel, not a picture

    tricks = articles["https://www.cep-probation.org/?p=90002"]
    assert not ACTIVE_CONTENT.search(tricks.summary_html), tricks.summary_html
    assert tricks.categories == ["Mental Health"]  # spelled as the association spells it
    assert tricks.summary_text == "Escaped markup tab trick…"  # "[&#8230;]" trimmed


@pytest.mark.parametrize("fragment", [
    '<a href="javascript:alert(1)">x</a>',
    '<a href="  JAVASCRIPT:alert(1)">x</a>',
    '<a href="java&#x09;script:alert(1)">x</a>',
    '<p onclick="alert(1)" style="color:red">x</p>',
    '<img src=x onerror=alert(1)>',
    '<iframe src="https://evil.example/"></iframe>',
    '<svg><script>alert(1)</script></svg>',
    '<math><mtext><style><img src=x onerror=alert(1)></style></mtext></math>',
    '<scr<script>ipt>alert(1)</script>',
    '<object data="https://evil.example/x.swf"></object>',
])
def test_sanitiser_removes_active_content(fragment: str) -> None:
    cleaned = clean_html(fragment, base_url="https://www.cep-probation.org/")
    assert not ACTIVE_CONTENT.search(cleaned), cleaned


def test_text_and_excerpt_of_sanitised_html() -> None:
    html = clean_html("<p>First &amp; foremost.</p><p>Second<br>line.</p><ul><li>a</li></ul>",
                      base_url="https://x.example/")
    assert html_to_text(html) == "First & foremost.\n\nSecond\n\nline.\n\n• a"
    long = "word " * 100
    cut = excerpt(long, 50)
    assert len(cut) <= 51 and cut.endswith("word…")


def test_broken_feed_imports_the_good_items_and_names_the_bad(clean) -> None:
    report = _import(FIXTURES / "broken-feed.xml")

    assert report.created == 3
    assert set(_articles()) == {"broken-1", "broken-4", "broken-5"}
    problems = "\n".join(report.problems)
    assert "not well-formed XML" in problems
    assert 'item 2 "An item without a link": no link' in problems
    assert 'item 3 "An item without a date": no publication date' in problems


def test_a_source_that_is_not_a_feed_is_refused_and_nothing_is_written(clean) -> None:
    with pytest.raises(FeedError, match="not an RSS or Atom feed"):
        load(str(FIXTURES / "not-a-feed.html"), ArticleSettings(), website_url=SITE)
    with pytest.raises(FeedError, match="no such file"):
        load(str(FIXTURES / "missing.xml"), ArticleSettings(), website_url=SITE)
    with pytest.raises(FeedError, match="not valid JSON"):
        feeds.parse(b'{"items": [', source="broken.json", articles=ArticleSettings(),
                    website_url=SITE)
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Article)) == 0


def test_atom_keeps_the_zone_and_takes_images_only_when_safe(clean) -> None:
    report = _import(FIXTURES / "atom-feed.xml")
    assert (report.created, report.problems) == (4, [])
    articles = _articles()

    copper = articles["tag:cep-probation.org,2025:copper-final"]
    assert copper.published_at == dt.datetime(2025, 12, 12, 8, 30, tzinfo=dt.UTC)
    assert copper.published_utc_offset == 60
    assert copper.author == "Jana Špero"
    assert copper.categories == ["CEP Events", "News"]
    assert (copper.image_url, copper.image_width, copper.image_height) == (
        "https://www.cep-probation.org/wp-content/uploads/2025/12/copper.jpg", 1200, 675)
    assert copper.image_alt == copper.title

    survey = articles["tag:cep-probation.org,2025:survey"]
    assert survey.published_utc_offset == -300
    assert survey.link == "https://www.cep-probation.org/european-survey-stress-and-morale/"
    assert survey.categories == ["Criminal Justice"]
    # http on the association's own site is upgraded; the size and alt come from the <img>.
    assert survey.image_url == "https://www.cep-probation.org/wp-content/uploads/2025/12/survey.png"
    assert (survey.image_width, survey.image_height) == (800, 800)
    assert survey.image_alt == "Cover of the survey report"

    press = articles["tag:cep-probation.org,2025:in-the-news"]
    assert press.image_url is None  # http on another host: dropped
    assert press.published_at == dt.datetime(2025, 12, 3, 8, 0, tzinfo=dt.UTC)  # <updated>

    reading = articles["tag:cep-probation.org,2025:reading-list"]
    assert reading.image_url == "https://cdn.example.net/books.jpg"
    assert reading.image_width is None  # size unknown: the digest will not show it


def test_json_feed(clean) -> None:
    report = _import(FIXTURES / "articles.json")
    assert report.created == 2
    assert any("An undated item" in p and "no publication date" in p for p in report.problems)
    assert any(p.startswith("item 4: not a JSON object") for p in report.problems)
    articles = _articles()
    call = articles["json-1"]
    assert call.categories == ["CEP Events"]
    assert call.author == "CEP Office"
    assert call.published_utc_offset == 60
    assert not ACTIVE_CONTENT.search(call.summary_html)
    assert 'href="https://www.cep-probation.org/call-for-papers/"' in call.summary_html
    assert (call.image_url, call.image_width, call.image_height, call.image_alt) == (
        "https://www.cep-probation.org/wp-content/uploads/2025/12/em.jpg", 1000, 500,
        "An electronic monitoring tag")
    toolkit = articles["json-2"]
    assert toolkit.summary_text == (
        "A practical toolkit.\n\nWritten with practitioners from six countries.")
    assert toolkit.categories == ["Mental Health", "Partners"]


# --- over HTTP, and the beat task ------------------------------------------------------------

@pytest.fixture
def feed_server() -> Iterator[str]:
    """A real HTTP server on loopback serving the feed fixtures."""
    files = {"/cep-feed.xml": CEP_FEED, "/atom.xml": FIXTURES / "atom-feed.xml",
             "/not-a-feed.html": FIXTURES / "not-a-feed.html"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            path = files.get(self.path)
            if path is None:
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_import_by_url(clean, feed_server) -> None:
    report = _import(f"{feed_server}/cep-feed.xml")
    assert report.created == 7
    assert all(a.source == f"{feed_server}/cep-feed.xml" for a in _articles().values())
    with pytest.raises(FeedError, match="HTTP 404"):
        load(f"{feed_server}/nothing.xml", LOOPBACK, website_url=SITE)


def test_beat_task_polls_the_configured_feeds_and_is_safe_to_repeat(clean, feed_server) -> None:
    from workers.maintenance import poll_feeds

    # Its own queue, so that no other worker of the session takes the task.
    queue = f"feeds-{uuid.uuid4().hex[:8]}"
    urls = [f"{feed_server}/cep-feed.xml", f"{feed_server}/missing.xml",
            f"{feed_server}/atom.xml"]
    env = {**clean.env, "MAILER_FEED_URLS": json.dumps(urls)}
    worker = Worker(env, clean.tmp / f"{queue}.log", queues=queue, concurrency=1, name=queue)
    worker.start()
    try:
        _publish(poll_feeds, queue, clean.redis_url)
        wait_for(lambda: len(_articles()) == 11, what="the two good feeds imported")
        wait_for(lambda: "HTTP 404" in worker.output(), what="the missing feed logged")
        stamps = {g: a.updated_at for g, a in _articles().items()}

        _publish(poll_feeds, queue, clean.redis_url)
        wait_for(lambda: worker.output().count("0 new, 0 updated, 7 unchanged") >= 1,
                 what="the second poll")
        wait_for(lambda: worker.output().count("0 new, 0 updated, 4 unchanged") >= 1,
                 what="the second poll of the Atom feed")
        assert {g: a.updated_at for g, a in _articles().items()} == stamps
    finally:
        worker.stop()


def _publish(task, queue: str, broker_url: str) -> None:  # type: ignore[no-untyped-def]
    # The Celery app took its broker from the settings of the first backend of the session;
    # publish on this backend's Redis database, where this test's worker listens.
    with task.app.connection_for_write(broker_url) as connection:
        task.apply_async(queue=queue, connection=connection)
