"""Trust nothing that arrives from a feed: its text is never a placeholder, and its URL
(or a redirect, or a DNS answer) never reaches into our own network.

The feed servers here are real HTTP servers on loopback. 127.0.0.1 is on the tests'
allow-list (MAILER_FEED_ALLOWED_HOSTS, conftest.py); 127.0.0.2, also loopback, is not.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from mailer.articles.feeds import FeedError, load
from mailer.articles.importer import import_feed
from mailer.config import ArticleSettings, IdentitySettings, get_settings
from mailer.db import transaction, utcnow
from mailer.editions import service, snapshot
from mailer.editions.models import Edition
from tests.support.factories import make_subscribers, start, wait_sent
from tests.support.mail import links, parse, parts

IDENTITY = IdentitySettings()  # the association as the tests' stack has it
SITE = IdentitySettings().website_url  # the association's own site (feeds.load)
RSS = (Path(__file__).resolve().parent / "fixtures" / "cep-feed.xml").read_bytes()


# --- servers ------------------------------------------------------------------------------------


class Served:
    def __init__(self, host: str, routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler],
                                                                 None]]) -> None:
        self.hosts: list[str] = []
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                served.hosts.append(self.headers.get("Host", ""))
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                # The client may give up on us, as it should.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _feed(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.send_header("Content-Length", str(len(RSS)))
    handler.end_headers()
    handler.wfile.write(RSS)


def _redirect(to: str) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", to)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return route


def _drip(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A slow-drip server: a byte every 0.2 s, for ever."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.end_headers()
    handler.wfile.write(b'<?xml version="1.0"?><rss version="2.0"><channel>')
    for _ in range(100_000):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.2)


def _endless(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.end_headers()
    for _ in range(100_000):
        handler.wfile.write(b"<!-- " + b"x" * 8000 + b" -->")


@pytest.fixture
def servers() -> Iterator[tuple[Served, Served]]:
    """An allowed server (127.0.0.1) and one on a loopback address that is not (127.0.0.2)."""
    inside = Served("127.0.0.2", {"/feed.xml": _feed})
    allowed = Served("127.0.0.1", {
        "/feed.xml": _feed,
        "/to-inside": _redirect(f"{inside.url}/feed.xml"),
        "/to-metadata": _redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-private": _redirect("http://10.20.30.40/feed.xml"),
        "/to-file": _redirect("file:///etc/passwd"),
        "/hop": _redirect("/feed.xml"),
        "/loop": _redirect("/loop"),
        "/drip": _drip,
        "/endless": _endless,
    })
    try:
        yield allowed, inside
    finally:
        allowed.close()
        inside.close()


#: The test servers listen on 127.0.0.1: the one address these settings let a fetch reach.
ALLOWED = ArticleSettings(feed_allowed_hosts=["127.0.0.1"])


# --- what a fetch may reach ----------------------------------------------------------------


def test_an_allowed_feed_is_fetched_and_its_redirects_followed(clean, servers) -> None:
    allowed, _ = servers
    assert len(load(f"{allowed.url}/feed.xml", ALLOWED, website_url=SITE).items) == 7
    assert len(load(f"{allowed.url}/hop", ALLOWED, website_url=SITE).items) == 7


@pytest.mark.parametrize("path,said", [
    ("/to-inside", "redirected to http://127.0.0.2:"),
    ("/to-metadata", "169.254.169.254 is a link-local address"),
    ("/to-private", "10.20.30.40 is a private address"),
    ("/to-file", "only http and https"),
    ("/loop", "more than 5 redirects"),
])
def test_redirects_are_checked_like_the_first_url(clean, servers, path: str, said: str) -> None:
    allowed, inside = servers
    with pytest.raises(FeedError, match=re.escape(said)):
        load(f"{allowed.url}{path}", ALLOWED, website_url=SITE)
    assert inside.hosts == []  # the server on the address that is not allowed saw nothing


@pytest.mark.parametrize("url", [
    "http://127.0.0.2:{port}/feed.xml", "http://[::1]:{port}/feed.xml",
    "http://[::ffff:127.0.0.2]:{port}/feed.xml", "http://0.0.0.0:{port}/feed.xml",
    "http://169.254.169.254/latest/meta-data/", "http://192.168.1.1/feed",
    "http://100.64.0.1/feed", "http://[fe80::1]/feed", "http://224.0.0.1/feed",
])
def test_private_loopback_and_link_local_targets_are_refused(clean, servers, url: str) -> None:
    _, inside = servers
    port = inside.url.rsplit(":", 1)[1]
    with pytest.raises(FeedError, match="feeds are fetched only from public addresses"):
        load(url.format(port=port), ALLOWED, website_url=SITE)
    assert inside.hosts == []


def test_a_host_name_on_the_allow_list_connects_to_the_address_it_was_checked_at(
        clean, servers) -> None:
    allowed, _ = servers
    port = allowed.url.rsplit(":", 1)[1]
    by_name = ArticleSettings(feed_allowed_hosts=["localhost"])
    assert len(load(f"http://localhost:{port}/feed.xml", by_name, website_url=SITE).items) == 7
    assert allowed.hosts == [f"localhost:{port}"]  # the name in Host, the checked address
    with pytest.raises(FeedError, match="127.0.0.1 is a loopback address"):
        # the name was allowed, not the address
        load(f"{allowed.url}/feed.xml", by_name, website_url=SITE)


def test_a_slow_drip_server_is_cut_off_at_the_deadline(clean, servers) -> None:
    allowed, _ = servers
    within_two = ArticleSettings(feed_allowed_hosts=["127.0.0.1"], feed_fetch_deadline_seconds=2)
    began = time.monotonic()
    with pytest.raises(FeedError, match=r"no complete answer within 2 s"):
        load(f"{allowed.url}/drip", within_two, website_url=SITE)
    # Cut off at the deadline, not after a read timeout per drip (the 63 s and counting of
    # issue 10); the margin is for a loaded machine.
    assert time.monotonic() - began < 2 + 5


def test_a_feed_over_the_size_cap_is_refused(clean, servers) -> None:
    allowed, _ = servers
    small = ArticleSettings(feed_allowed_hosts=["127.0.0.1"], feed_max_bytes=256 * 1024)
    with pytest.raises(FeedError, match="larger than 262,144 bytes"):
        load(f"{allowed.url}/endless", small, website_url=SITE)


def test_the_cli_import_refuses_an_inside_url_and_writes_nothing(clean, servers) -> None:
    from sqlalchemy import func, select

    from mailer.articles.models import Article
    from mailer.cli import app

    allowed, inside = servers
    result = CliRunner().invoke(app, ["articles", "import", f"{allowed.url}/to-inside"])
    assert result.exit_code == 1
    assert "127.0.0.2 is a loopback address" in " ".join(result.output.split())
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Article)) == 0
    assert inside.hosts == []


# --- feed text is never a placeholder -------------------------------------------------------

HOSTILE = {
    "id": "hostile-1",
    "url": "https://evil.example/read?who=%%email%%&u=%%unsubscribe_url%%",
    "title": "Hello %%first_name%% %%greeting%% %%email%%",
    "content_html": ("<p>Write to %%email%% or <a href=\"https://evil.example/?%%email%%\">"
                     "here</a>, %%view_url%%.</p>"),
    "image": {"url": "https://evil.example/pixel.png?e=%%email%%&u=%%unsubscribe_url%%",
              "width": 600, "height": 300},
    "tags": ["News"],
}


def _hostile_feed(tmp_path: Path) -> Path:
    item = {**HOSTILE, "date_published": (utcnow() - dt.timedelta(days=1)).isoformat()}
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps({"version": "https://jsonfeed.org/version/1.1",
                                "items": [item]}), encoding="utf-8")
    return path


def _draft_with(feed: Path) -> int:
    with transaction() as session:
        import_feed(session, load(str(feed), ArticleSettings(), website_url=SITE))
    with transaction() as session:
        edition = service.draft_edition(session, identity=IDENTITY, by="test",
                                        window_start=utcnow() - dt.timedelta(days=3))
        assert len(edition.articles) == 1
        return edition.id


_TRACKED = re.compile(r"https?://[^\s\"<>]+/r/(\d+)/(\d+)/[\w-]+")


def _resolved(part: str) -> str:
    """``part`` with each counted link (/r/…, mailer.clicks) replaced by where it leads,
    as stored with the edition: the feed's own URL, its text untouched."""
    from mailer.clicks.models import EditionLink

    with transaction() as session:
        stored = {(link.edition_id, link.position): link.url
                  for link in session.scalars(select(EditionLink))}
    return _TRACKED.sub(lambda m: stored[(int(m.group(1)), int(m.group(2)))], part)


def test_placeholders_in_feed_content_reach_no_reader(rig, tmp_path) -> None:
    """The readers' mail, as the SMTP server got it: where the feed wrote a placeholder the
    bytes carry that text (its links lead to the feed's URL as written), and no URL in the
    mail holds a reader's address."""
    edition_id = _draft_with(_hostile_feed(tmp_path))
    readers = make_subscribers(3, domain="example.org")
    rig.worker()
    assert start(edition_id) == 3
    wait_sent(edition_id)

    mails = rig.stack.smtp.messages
    assert sorted(m.rcpt_tos[0] for m in mails) == sorted(readers)
    for mail in mails:
        reader = mail.rcpt_tos[0]
        text, html = (_resolved(part) for part in parts(parse(mail)))
        for part in (text, unescape(html)):
            assert "https://evil.example/read?who=%%email%%&u=%%unsubscribe_url%%" in part
            assert "Hello %%first_name%% %%greeting%% %%email%%" in part
        assert "https://evil.example/pixel.png?e=%%email%%&u=%%unsubscribe_url%%" in unescape(
            html)
        assert "Write to %%email%%" in text and "Write to %%email%%" in unescape(html)
        urls = links(text) + [unescape(u) for u in re.findall(r'(?:href|src)="([^"]+)"', html)]
        evil = [u for u in urls if "evil.example" in u]
        assert len(evil) >= 3
        for url in evil:
            assert reader not in url and reader.split("@")[0] not in url
            assert "/unsubscribe/" not in url
        # The reader's own values are where the template put them, and only there.
        assert f"because {reader} is subscribed" in " ".join(text.split())
        assert "Dear Reader" in text


def test_the_preview_and_the_snapshot_keep_feed_placeholders_as_text(clean, tmp_path) -> None:
    edition_id = _draft_with(_hostile_feed(tmp_path))
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        preview = service.render_preview(session, edition, settings=get_settings())
        assert "maria.jansen@example.org" in preview.html  # the sample reader, in the footer
        assert "who=%%email%%" in unescape(preview.html)
        snapshot.freeze(session, edition, get_settings())
        key = edition.placeholder_key
        assert key and re.fullmatch(r"[0-9a-f]{32}", key)
        # The snapshot's own placeholders end in the key; the feed's do not.
        assert f"%%unsubscribe_url_{key}%%" in edition.html_snapshot
        assert "%%unsubscribe_url%%" in edition.html_snapshot  # the feed's, kept as text
        assert key not in (edition.archive_html or "")
        frozen = service.render_preview(session, edition, settings=get_settings())
        assert f"_{key}%%" not in frozen.html and f"_{key}%%" not in frozen.text
    # (read after the transaction: a second one inside it would wait for it on SQLite)
    assert "who=%%email%%" in unescape(_resolved(frozen.html))
