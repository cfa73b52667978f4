"""The web archive: the list of sent editions and each one as the "view in browser" page."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import lxml.html

from mailer.articles.feeds import load
from mailer.articles.importer import import_feed
from mailer.config import ArticleSettings, IdentitySettings, get_settings
from mailer.db import transaction
from mailer.editions import service, snapshot
from mailer.editions.models import Edition, EditionState
from mailer.editions.states import transition

IDENTITY = IdentitySettings()  # the association as the tests' stack has it
SITE = IdentitySettings().website_url  # the association's own site (feeds.load)
CEP_FEED = Path(__file__).resolve().parent / "fixtures" / "cep-feed.xml"  # copy of shared/fixtures
AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def _edition(subject: str, start: dt.datetime, end: dt.datetime, *states: EditionState) -> int:
    """An edition of the fixture feed's articles, frozen and moved through ``states``."""
    with transaction() as session:
        edition = service.draft_edition(session, identity=IDENTITY, subject=subject,
                                        window_start=start, window_end=end, by="test")
        if states:
            snapshot.freeze(session, edition, get_settings())
        for state in states:
            transition(session, edition, state)
        return edition.id


def test_archive_lists_sent_editions_and_shows_them_without_personal_links(clean, web) -> None:
    feed = load(str(CEP_FEED), ArticleSettings(), website_url=SITE)
    with transaction() as session:
        import_feed(session, feed)
    december = _edition("CEP Newsletter – December 2025",
                        dt.datetime(2025, 12, 1, tzinfo=AMSTERDAM),
                        dt.datetime(2026, 1, 1, tzinfo=AMSTERDAM),
                        EditionState.sending, EditionState.sent)
    going_out = _edition("CEP Newsletter – mid-December",
                         dt.datetime(2025, 12, 12, tzinfo=AMSTERDAM),
                         dt.datetime(2025, 12, 31, tzinfo=AMSTERDAM), EditionState.sending)
    draft = _edition("CEP Newsletter – a draft", dt.datetime(2025, 12, 1, tzinfo=AMSTERDAM),
                     dt.datetime(2025, 12, 20, tzinfo=AMSTERDAM))
    with transaction() as session:
        sent, sending, drafted = (session.get(Edition, i) for i in (december, going_out, draft))
        base_url = get_settings().base_url
        sent_url, sending_url, draft_url = (snapshot.view_url(e, base_url)
                                            for e in (sent, sending, drafted))
        archive_html = sent.archive_html
        mail = snapshot.personaliser_for(sent, get_settings().base_url).html({
            "unsubscribe_url": "https://x.example/unsubscribe/abc.def", "view_url": sent_url,
            "first_name": "Anna", "email": "anna@example.org"})
    client = httpx.Client(base_url=web.url, timeout=10)

    index = client.get("/archive")
    assert index.status_code == 200
    listed = lxml.html.fromstring(index.text).xpath("//ul[@class='archive']//a")
    assert [(a.text, a.get("href")) for a in listed] == [
        ("CEP Newsletter – December 2025", "/archive/2025-12-newsletter")]

    # The mail's "view in browser" link opens the archive copy.
    assert f'href="{sent_url}"' in mail
    page = client.get(sent_url.removeprefix(web.url))
    assert page.status_code == 200
    assert page.text == archive_html
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for personal in ("/unsubscribe/", "Anna", "anna@example.org", "%%",
                     "View this email in your browser"):
        assert personal not in page.text
    assert "Dear reader," in page.text
    assert "Why some court-ordered psychiatric patients remain in prison in Europe" in page.text
    doc = lxml.html.fromstring(page.text)
    assert f"{web.url}/subscribe" in doc.xpath("//a/@href")

    # Readers of an edition still going out can open it too; a draft is nobody's business.
    assert client.get(sending_url.removeprefix(web.url)).status_code == 200
    missing = client.get(draft_url.removeprefix(web.url))
    assert missing.status_code == 404 and "not in the archive" in missing.text
    assert client.get("/archive/no-such-edition").status_code == 404


def test_archive_feed_lists_the_sent_editions_newest_first_without_personal_links(
        clean, web) -> None:
    import feedparser

    with transaction() as session:
        import_feed(session, load(str(CEP_FEED), ArticleSettings(), website_url=SITE))
    window = (dt.datetime(2025, 12, 1, tzinfo=AMSTERDAM), dt.datetime(2026, 1, 1, tzinfo=AMSTERDAM))
    first = _edition("Edition one", *window, EditionState.sending, EditionState.sent)
    second = _edition("Edition two", *window, EditionState.sending, EditionState.sent)
    _edition("Still going out", *window, EditionState.sending)
    _edition("A draft", *window)
    with transaction() as session:
        base_url = get_settings().base_url
        urls = {i: snapshot.view_url(session.get(Edition, i), base_url) for i in (first, second)}
        titles = [ea.article.title for ea in session.get(Edition, first).articles]
    client = httpx.Client(base_url=web.url, timeout=10)

    answer = client.get("/archive.xml")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(answer.content)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert [e.title for e in parsed.entries] == ["Edition two", "Edition one"]
    assert [e.link for e in parsed.entries] == [urls[second], urls[first]]
    content = parsed.entries[1].content[0].value
    assert titles and all(lxml.html.fromstring(f"<p>{t}</p>").text_content() in
                          lxml.html.fromstring(content).text_content() for t in titles)
    # Nothing a reader owns: no unsubscribe link, no token, no placeholder, no greeting.
    for personal in ("/unsubscribe", "/confirm/", "token", "%%", "Dear "):
        assert personal not in answer.text
    self_link = [link.href for link in parsed.feed.links if link.rel == "self"]
    assert self_link == [f"{web.url}/archive.xml"]

    head = client.head("/archive.xml")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("application/atom+xml")
    assert client.post("/archive.xml").status_code == 405

    # The archive page names the feed for feed readers and browsers.
    index = lxml.html.fromstring(client.get("/archive").text)
    assert index.xpath("//link[@rel='alternate'][@type='application/atom+xml']/@href") == [
        "/archive.xml"]


def test_an_empty_archive_is_a_valid_empty_feed(clean, web) -> None:
    import feedparser

    answer = httpx.get(f"{web.url}/archive.xml", timeout=10)
    assert answer.status_code == 200
    parsed = feedparser.parse(answer.content)
    assert not parsed.bozo and parsed.version == "atom10"
    assert parsed.entries == []
    assert parsed.feed.title.endswith(": editions") and parsed.feed.updated
