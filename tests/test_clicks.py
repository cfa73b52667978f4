"""Clicks per article, never per reader (issue 15): the links of an edition go through
``/r/<edition>/<link>/<signature>``, are counted in Redis and flushed to the database."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import lxml.html
import pytest
from sqlalchemy import select

from mailer import tasks
from mailer.clicks import counting, links
from mailer.clicks.models import ClickFlush, EditionLink
from mailer.config import Settings, get_settings
from mailer.db import transaction
from mailer.editions import snapshot
from mailer.editions.models import Edition
from mailer.redis import get_redis
from tests.conftest import wait_for
from tests.support.admin import Admin, make_staff
from tests.support.factories import make_edition, make_subscribers, stack_keys, start, wait_sent
from tests.support.mail import parse, parts

BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.5 Safari/605.1.15")
SAFE_LINKS = "Mozilla/5.0 (compatible; Microsoft SafeLinks scanner)"
TRACKED = re.compile(r"https?://[^\s\"<>]+/r/\d+/\d+/[\w-]+")


def _frozen(articles: int = 2, settings: Settings | None = None
            ) -> tuple[Edition, list[EditionLink], list[str]]:
    edition_id = make_edition(articles=articles)
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        article_urls = [chosen.article.link for chosen in edition.articles]
        snapshot.freeze(session, edition, settings or get_settings())
        rows = list(session.scalars(select(EditionLink).where(
            EditionLink.edition_id == edition_id).order_by(EditionLink.position)))
        session.expunge_all()
    return edition, rows, article_urls


def _links(rows: list[EditionLink]) -> dict[str, EditionLink]:
    return {row.url: row for row in rows}


def test_the_snapshot_links_through_r_and_the_links_are_kept_once(clean) -> None:
    edition, rows, article_urls = _frozen()
    by_url = _links(rows)
    assert set(article_urls) <= set(by_url)  # every article, once each
    assert [row.position for row in rows] == list(range(1, len(rows) + 1))
    for url in article_urls:  # labelled with what the mail says: the article's title
        assert by_url[url].label and by_url[url].label != "Read more"
    html, text = edition.html_snapshot or "", edition.text_snapshot or ""
    for url in by_url:  # no article is linked to directly, in either part
        assert f'href="{url}"' not in html and url not in TRACKED.sub("", text)
    tracked = set(TRACKED.findall(html))
    assert tracked == set(TRACKED.findall(text))
    assert len(tracked) == len(rows)
    assert "%%unsubscribe_url_" in html and "%%view_url_" in html  # the reader's own links
    # The signature is over the edition and the link only: the same for every reader.
    first = rows[0]
    assert links.tracked_url("http://x", edition.id, 1, keys=stack_keys()).endswith(
        f"/r/{edition.id}/1/{links.signature(edition.id, first.position, keys=stack_keys())}")


def test_a_real_send_and_real_clicks_are_counted_per_link(clean, worker, web) -> None:
    make_subscribers(3)
    edition_id = make_edition(articles=2)
    assert start(edition_id) == 3
    wait_sent(edition_id)
    per_reader = []
    for received in clean.smtp.messages:
        text, html = parts(parse(received))
        per_reader.append(sorted(set(TRACKED.findall(html))))
        assert sorted(set(TRACKED.findall(text))) == per_reader[-1]
    assert per_reader[0] and all(found == per_reader[0] for found in per_reader)  # alike
    with transaction() as session:
        rows = _links(list(session.scalars(
            select(EditionLink).where(EditionLink.edition_id == edition_id))))
    article = next(u for u in per_reader[0])
    position = int(urlsplit(article).path.split("/")[3])
    target = next(row.url for row in rows.values() if row.position == position)

    client = httpx.Client(timeout=10)
    path = urlsplit(article).path
    for agent in (BROWSER, BROWSER, SAFE_LINKS):
        answer = client.get(web.url + path, headers={"user-agent": agent})
        assert answer.status_code == 303 and answer.headers["location"] == target
        assert "no-store" in answer.headers["cache-control"]
    head = client.head(web.url + path, headers={"user-agent": BROWSER})
    assert head.status_code == 303 and head.headers["location"] == target

    tasks.publish(tasks.FLUSH_CLICKS, session=None)  # what beat does every minute

    def counted() -> tuple[int, int, int] | None:
        with transaction() as session:
            row = session.get(EditionLink, (edition_id, position))
            assert row is not None
            got = (row.clicks, row.head_requests, row.scanner_clicks)
        return got if got != (0, 0, 0) else None

    assert wait_for(counted, what="the flush") == (2, 1, 1)
    with transaction() as session:  # the other links were not followed
        others = [(r.clicks, r.head_requests, r.scanner_clicks) for r in session.scalars(
            select(EditionLink).where(EditionLink.edition_id == edition_id,
                                      EditionLink.position != position))]
    assert others and set(others) == {(0, 0, 0)}

    # Nothing written down ties the click to whoever made it: no access-log line of /r/.
    web_log = (clean.tmp / "web.log").read_text()
    assert "GET /r/" not in web_log and "HEAD /r/" not in web_log

    # The editors see it on the send's page: the followed link first, with its count.
    make_staff("editor@cep.example")
    admin = Admin(web.url)
    admin.login("editor@cep.example")
    page = lxml.html.fromstring(admin.get(f"/admin/editions/{edition_id}/progress").text)
    first = page.xpath("//table[@class='links']/tbody/tr")[0]
    assert first.xpath("td[1]/a/@href") == [target]
    assert [" ".join(td.text_content().split()) for td in first.xpath("td[2]|td[4]")] == [
        "2", "2"]
    admin.close()


@pytest.mark.parametrize("mangle", [
    "signature", "other link's signature", "a link the edition lacks", "not a number",
    "too large", "non-ascii", "edition of another",
])
def test_a_link_we_did_not_sign_is_404_and_redirects_nowhere(clean, web, mangle) -> None:
    edition, rows, _ = _frozen(articles=1)
    n = len(rows)
    good = links.signature(edition.id, 1, keys=stack_keys())
    path = {
        "signature": f"/r/{edition.id}/1/{good[:-1]}{'A' if good[-1] != 'A' else 'B'}",
        "other link's signature": f"/r/{edition.id}/1/"
                                  f"{links.signature(edition.id, 2, keys=stack_keys())}",
        "a link the edition lacks": f"/r/{edition.id}/{n + 1}/"
                                    f"{links.signature(edition.id, n + 1, keys=stack_keys())}",
        "not a number": f"/r/{edition.id}/one/{good}",
        "too large": f"/r/{edition.id}/{10**30}/"
                     f"{links.signature(edition.id, 10**30, keys=stack_keys())}",
        "non-ascii": f"/r/{edition.id}/\u0661/{good}",
        "edition of another": f"/r/{edition.id + 1}/1/{good}",
    }[mangle]
    answer = httpx.get(web.url + path, timeout=10)
    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert not get_redis().exists(counting.PENDING)  # and nothing counted, for any edition


def test_the_flush_counts_each_click_once_after_a_crash(clean) -> None:
    edition, rows, _ = _frozen(articles=1)
    redis = get_redis()
    for kind in (counting.Kind.click, counting.Kind.click, counting.Kind.head):
        counting.count(redis, edition.id, 1, kind)
    # A flush that died after its transaction committed, before it deleted its batch:
    counting.take_batches(redis)
    [batch] = [m.decode() for m in redis.smembers(counting.BATCHES)]
    with transaction() as session:
        assert counting.add_batch(session, batch, redis.hgetall(batch))
    # ...and one that died after renaming, before any commit (a new click came meanwhile):
    counting.count(redis, edition.id, 1, counting.Kind.click)
    counting.take_batches(redis)
    assert redis.scard(counting.BATCHES) == 2

    assert counting.flush(redis) == 1  # only the batch not counted before
    assert counting.flush(redis) == 0  # and running it again changes nothing
    with transaction() as session:
        row = session.get(EditionLink, (edition.id, 1))
        assert (row.clicks, row.head_requests, row.scanner_clicks) == (3, 1, 0)
        assert len(session.scalars(select(ClickFlush)).all()) == 2
    assert not redis.exists(counting.BATCHES, counting.PENDING, f"{counting.KEY}{edition.id}")


def test_our_own_pages_are_linked_straight_and_escaped_links_kept_whole(clean) -> None:
    rewritten = links.rewrite(
        '<a href="http://me.example/archive/x">A</a> '
        '<a class="b" href="https://a.example/?q=1&amp;b=2" aria-label="Read more: B">B</a>',
        "see http://me.example/subscribe and https://a.example/?q=1&b=2.",
        edition_id=7, base_url="http://me.example", keys=stack_keys())
    assert rewritten.links == [links.Link(1, "https://a.example/?q=1&b=2", "Read more: B")]
    tracked = links.tracked_url("http://me.example", 7, 1, keys=stack_keys())
    assert rewritten.html == ('<a href="http://me.example/archive/x">A</a> '
                              f'<a class="b" href="{tracked}" aria-label="Read more: B">B</a>')
    assert rewritten.text == f"see http://me.example/subscribe and {tracked}."


def test_the_text_part_gets_the_html_links_whole_or_keeps_its_own() -> None:
    """The text part is rewritten only where it spells out a link of the HTML: a link the
    reader could not reach whole (cut at a parenthesis, a quote, an encoded letter) would
    be worse than one not counted."""
    urls = ["https://en.wikipedia.org/wiki/Probation_(law)", "https://x.org/it's",
            "https://x.org/caf%C3%A9", "https://x.org/a"]
    html_part = " ".join(f'<a href="{u}">{i}</a>' for i, u in enumerate(urls))
    text_part = ("see https://en.wikipedia.org/wiki/Probation_(law). and https://x.org/it's, "
                 "https://x.org/café! (https://x.org/a) https://x.org/ab https://only.text/x")
    rewritten = links.rewrite(html_part, text_part, edition_id=3, base_url="http://me",
                              keys=stack_keys())
    assert [link.url for link in rewritten.links] == urls
    t = [links.tracked_url("http://me", 3, n, keys=stack_keys()) for n in (1, 2, 3, 4)]
    assert rewritten.text == (f"see {t[0]}. and {t[1]}, {t[2]}! ({t[3]}) https://x.org/ab "
                              "https://only.text/x")


def test_one_flush_at_a_time_and_a_click_never_lands_where_none_looks(clean) -> None:
    edition, rows, _ = _frozen(articles=1)
    redis = get_redis()
    counting.count(redis, edition.id, 1, counting.Kind.click)
    held = redis.lock(counting.LOCK, timeout=30)
    assert held.acquire(blocking=False)
    assert counting.flush(redis) == 0  # another flush is at it: this one leaves it alone
    assert redis.hlen(f"{counting.KEY}{edition.id}") == 1
    held.release()
    counting.take_batches(redis)  # listed and renamed at once: a batch is never empty
    assert all(redis.exists(m) for m in redis.smembers(counting.BATCHES))
    assert counting.flush(redis) == 1


def test_a_redis_that_is_away_costs_the_count_not_the_redirect(clean, tmp_path) -> None:
    from tests.support.processes import WebServer, free_port

    edition, rows, _ = _frozen(articles=1)
    closed = free_port()  # nothing listens there
    server = WebServer({**clean.env, "MAILER_REDIS_URL": f"redis://127.0.0.1:{closed}/0"},
                       tmp_path / "web.log", free_port()).start()
    try:
        signature = links.signature(edition.id, 1, keys=stack_keys())
        answer = httpx.get(f"{server.url}/r/{edition.id}/1/{signature}", timeout=10)
    finally:
        server.stop()
    assert answer.status_code == 303 and answer.headers["location"] == rows[0].url


@pytest.mark.parametrize(("method", "agent", "kind"), [
    ("GET", BROWSER, counting.Kind.click),
    ("HEAD", BROWSER, counting.Kind.head),
    ("GET", SAFE_LINKS, counting.Kind.scanner),
    ("GET", "Mozilla/5.0 (compatible; proofpoint urldefense)", counting.Kind.scanner),
    ("GET", "python-requests/2.32.3", counting.Kind.scanner),
    ("GET", None, counting.Kind.scanner),
])
def test_scanners_and_head_requests_are_counted_apart(method, agent, kind) -> None:
    assert counting.kind_of(method, agent) is kind


def test_without_click_tracking_the_mail_links_straight(clean) -> None:
    settings = get_settings()
    off = settings.model_copy(update={
        "editions": settings.editions.model_copy(update={"click_tracking": False})})
    edition, rows, article_urls = _frozen(articles=1, settings=off)
    assert rows == []
    assert f'href="{article_urls[0]}"' in (edition.html_snapshot or "")
    assert "/r/" not in (edition.html_snapshot or "") + (edition.text_snapshot or "")


def test_the_links_of_an_edition_that_went_out_are_remembered_a_drafts_are_not(
        clean, web) -> None:
    from sqlalchemy import update

    from mailer.editions.states import EDITABLE

    assert set(links.CHANGING) == {state.value for state in EDITABLE}
    edition, rows, _ = _frozen(articles=1)
    path = f"/r/{edition.id}/1/{links.signature(edition.id, 1, keys=stack_keys())}"
    remembered = f"{links.DESTINATIONS_KEY}{edition.id}"

    def follow() -> str:
        answer = httpx.get(web.url + path, headers={"User-Agent": BROWSER}, timeout=10)
        assert answer.status_code == 303
        return answer.headers["location"]

    # A draft's link (a test copy's) is looked up every time: an edit makes it again.
    assert follow() == rows[0].url
    assert not get_redis().exists(remembered)
    with transaction() as session:
        session.execute(update(EditionLink).where(EditionLink.edition_id == edition.id,
                                                  EditionLink.position == 1)
                        .values(url="https://www.example.org/edited"))
    assert follow() == "https://www.example.org/edited"

    # Once the edition has gone out, the first click finds the link and Redis keeps it;
    # the next ones are answered from there (the database row changed under it is not
    # read again) and counted as the first was.
    with transaction() as session:
        session.execute(update(Edition).where(Edition.id == edition.id).values(state="sending"))
    assert follow() == "https://www.example.org/edited"
    assert get_redis().hget(remembered, "1") == b"https://www.example.org/edited"
    assert 0 < get_redis().ttl(remembered) <= links.DESTINATIONS_TTL
    with transaction() as session:
        session.execute(update(EditionLink).where(EditionLink.edition_id == edition.id)
                        .values(url="https://www.example.org/not-read"))
    assert follow() == "https://www.example.org/edited"
    assert counting.flush(get_redis()) == 4
    with transaction() as session:
        assert session.scalar(select(EditionLink.clicks).where(
            EditionLink.edition_id == edition.id)) == 4  # two as a draft, two since
    # A signed position the edition lacks is still a 404, counted nowhere.
    n = len(rows) + 1
    lacking = f"/r/{edition.id}/{n}/{links.signature(edition.id, n, keys=stack_keys())}"
    assert httpx.get(web.url + lacking, timeout=10).status_code == 404
    assert not get_redis().exists(counting.PENDING)


def test_a_redis_that_hangs_or_is_gone_still_lets_the_reader_through(clean, tmp_path) -> None:
    import os
    import signal

    from sqlalchemy import update

    from tests.support.processes import WebServer, free_port
    from tests.support.redis_server import RedisServer

    edition, rows, _ = _frozen(articles=1)
    with transaction() as session:
        session.execute(update(Edition).where(Edition.id == edition.id).values(state="sending"))
    path = f"/r/{edition.id}/1/{links.signature(edition.id, 1, keys=stack_keys())}"
    own = RedisServer(tmp_path / "redis").start()
    web = WebServer({**clean.env, "MAILER_REDIS_URL": own.url}, tmp_path / "web.log",
                    free_port())
    try:
        web.start()

        def follow() -> str:
            answer = httpx.get(web.url + path, headers={"User-Agent": BROWSER}, timeout=30)
            assert answer.status_code == 303
            return answer.headers["location"]

        assert follow() == rows[0].url  # looked up, counted, remembered
        assert follow() == rows[0].url  # from Redis
        assert own.proc is not None
        os.kill(own.proc.pid, signal.SIGSTOP)  # a Redis that takes every request, answers none
        try:
            assert follow() == rows[0].url  # from the database, after the quick client gave up
        finally:
            os.kill(own.proc.pid, signal.SIGCONT)
        own.stop()
        assert follow() == rows[0].url  # and with no Redis at all
        lacking = f"/r/{edition.id}/9/{links.signature(edition.id, 9, keys=stack_keys())}"
        assert httpx.get(web.url + lacking, timeout=30).status_code == 404
        assert "was not counted" in (tmp_path / "web.log").read_text()
    finally:
        web.stop()
        own.stop()
