"""The digest: drafting an edition, composing it, freezing the snapshot and personalising it."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import cssutils
import lxml.html
import pytest
from sqlalchemy import select

from mailer.articles.feeds import load
from mailer.articles.importer import import_feed
from mailer.articles.models import Article
from mailer.config import ArticleSettings, IdentitySettings, get_settings
from mailer.db import transaction, utcnow
from mailer.editions import service, snapshot
from mailer.editions.compose import compose
from mailer.editions.models import Edition, EditionState
from mailer.editions.states import transition
from tests.support.mail import links

IDENTITY = IdentitySettings()  # the association as the tests' stack has it
SITE = IdentitySettings().website_url  # the association's own site (feeds.load)
ROOT = Path(__file__).resolve().parents[1]
CEP_FEED = ROOT / "tests" / "fixtures" / "cep-feed.xml"  # copy of shared/fixtures
FIXTURES = ROOT / "tests" / "fixtures"
AMSTERDAM = ZoneInfo("Europe/Amsterdam")  # the association's time zone (the default setting)
DECEMBER = (dt.datetime(2025, 12, 1, tzinfo=AMSTERDAM), dt.datetime(2026, 1, 1, tzinfo=AMSTERDAM))

cssutils.log.setLevel(logging.CRITICAL)


def _import(*paths: Path) -> None:
    for path in paths:
        feed = load(str(path), ArticleSettings(), website_url=SITE)
        with transaction() as session:
            import_feed(session, feed)


def _draft(*paths: Path, **kwargs: object) -> int:
    _import(*paths)
    with transaction() as session:
        kwargs.setdefault("window_start", DECEMBER[0])
        kwargs.setdefault("window_end", DECEMBER[1])
        return service.draft_edition(session, identity=IDENTITY, by="test", **kwargs).id  # type: ignore[arg-type]


@contextmanager
def _edition(edition_id: int) -> Iterator[tuple[object, Edition]]:
    with transaction() as session:
        yield session, session.get(Edition, edition_id)


def _article_id(session, guid: str) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(Article.id).where(Article.guid == guid))


def _section_titles(page: str) -> list[str]:
    doc = lxml.html.fromstring(page)
    return [td.text_content().strip() for td in doc.find_class("section-title")]


def _card_titles(page: str) -> list[str]:
    doc = lxml.html.fromstring(page)
    return [h.text_content().strip() for h in doc.find_class("card-title")]


# --- drafting and editing ------------------------------------------------------------------

def test_draft_takes_the_window_and_groups_articles_by_category(clean) -> None:
    edition_id = _draft(CEP_FEED)
    with _edition(edition_id) as (session, edition):
        assert edition.state == "draft" and edition.created_by == "test"
        assert edition.subject == "CEP Newsletter – December 2025"
        assert edition.slug == "2025-12-newsletter"
        assert len(edition.articles) == 6  # the 2017 article is outside the window
        assert service.candidate_articles(session, edition) == []
        page = service.render_preview(session, edition, settings=get_settings()).html
    # The association's order of categories; the article filed under two categories
    # appears once, under its first one; the one WordPress filed as "Uncategorized" is
    # under News.
    assert _section_titles(page) == ["News", "CEP Events", "Mental Health",
                                     "Human rights and ethics", "Partners", "Reading corner"]
    assert len(_card_titles(page)) == 6


def _sections_with_badges(page: str) -> dict[str, list[list[str]]]:
    """Each section's heading and, per card, its badges."""
    doc = lxml.html.fromstring(page)
    return {
        table.find_class("section-title")[0].text_content().strip(): [
            [b.text_content().strip() for b in card.find_class("badge")]
            for card in table.find_class("card")]
        for table in doc.find_class("section")
    }


def test_readers_never_see_the_default_category_and_badges_do_not_repeat_the_heading(
        clean, tmp_path) -> None:
    # WordPress's default category, alone, first of several, and in another spelling.
    items = [{"id": f"item-{n}", "url": f"https://www.cep-probation.org/item-{n}/",
              "title": title, "tags": tags, "date_published": "2025-12-10T10:00:00+01:00"}
             for n, (title, tags) in enumerate([
                 ("Filed under nothing", ["Uncategorized"]),
                 ("Filed under nothing, as JSON says", []),
                 ("Filed under the default and Partners", ["uncategorised", "Partners"]),
                 ("Two categories", ["Mental Health", "Criminal Justice"])])]
    (tmp_path / "items.json").write_text(json.dumps({"items": items}))
    edition_id = _draft(CEP_FEED, tmp_path / "items.json")
    with _edition(edition_id) as (session, edition):
        composed = compose(edition, get_settings())
        preview = service.render_preview(session, edition, settings=get_settings())
    for page in (composed.html, composed.archive_html, preview.html):
        sections = _sections_with_badges(page)
        assert list(sections) == ["News", "CEP Events", "Mental Health",
                                  "Human rights and ethics", "Partners", "Reading corner"]
        assert "uncategori" not in page.casefold()
        # No badge says what its section's heading says; other categories are kept.
        for heading, cards in sections.items():
            assert all(heading not in badges for badges in cards), heading
        assert sections["News"] == [[], [], []]  # the newsletter and the two unfiled items
        assert sections["Mental Health"] == [[], ["Criminal Justice"]]  # newest first
        assert sections["Partners"] == [[], []]
        assert sections["Reading corner"] == [["Criminal Justice"]]
        # A card without badges has no empty badge line either.
        assert '<p class="badges"></p>' not in page and 'class="badges"> </p>' not in page
    for text in (composed.text, preview.text):
        assert "uncategori" not in text.casefold()
        assert "10 December 2025 · Criminal Justice" in text  # under Mental Health
        assert "NEWS\n====" in text
        assert not re.search(r"\d{4} · (News|Mental Health)\n", text)


def test_staff_drop_add_reorder_and_order_the_categories(clean) -> None:
    edition_id = _draft(CEP_FEED, FIXTURES / "atom-feed.xml")
    with _edition(edition_id) as (session, edition):
        recap = _article_id(session, "https://www.cep-probation.org/?p=40219")
        copper = _article_id(session, "tag:cep-probation.org,2025:copper-final")
        liaise = _article_id(session, "https://www.cep-probation.org/?p=8123")
        service.drop_article(session, edition, recap, by="test")
        assert [a.id for a in service.candidate_articles(session, edition)] == [recap]
        service.add_article(session, edition, liaise, by="test")  # from 2017, outside the window
        service.move_article(session, edition, copper, len(edition.articles) - 1, by="test")
        service.add_article(session, edition, recap, by="test")  # back, after copper
        service.update_edition(session, edition, category_order=["Partners", "News"], by="test",
                               identity=IDENTITY)
        with pytest.raises(service.EditionError, match="already in this edition"):
            service.add_article(session, edition, recap, by="test")
        with pytest.raises(service.EditionError, match="no article with id 999999"):
            service.set_articles(session, edition, [recap, 999999])
        with pytest.raises(service.EditionError, match="appears twice"):
            service.update_edition(session, edition, category_order=["News", "News"], by="test",
                                   identity=IDENTITY)
    with _edition(edition_id) as (session, edition):
        page = service.render_preview(session, edition, settings=get_settings()).html
    sections = _section_titles(page)
    assert sections[:3] == ["Partners", "News", "CEP Events"]
    titles = _card_titles(page)
    # Under News (after the two Partners articles): the article WordPress filed as
    # "Uncategorized", then the 2017 one added last.
    assert titles[2:4] == ["Newsletter December 2025 out now, featuring the 2026 CEP "
                           "Activity calendar", "Successful 3rd European LIAISE2 seminar"]
    # Within CEP Events, the edition's order: copper was moved behind, recap added last.
    events = titles[4:6]
    assert events == ["CoPPer Final Project Conference in Barcelona",
                      "Recap: First face-to-face meeting of the Expert Group Chairs"]


def test_changing_the_window_chooses_the_articles_again(clean) -> None:
    edition_id = _draft(CEP_FEED)
    with _edition(edition_id) as (session, edition):
        service.update_edition(session, edition,
                               window_start=dt.datetime(2025, 12, 15, tzinfo=dt.UTC), by="test",
                               identity=IDENTITY)
        assert len(edition.articles) == 3  # 15, 17 and 18 December
        with pytest.raises(service.EditionError, match="start before it ends"):
            service.update_edition(session, edition, window_start=DECEMBER[1], by="test",
                                   identity=IDENTITY)
        with pytest.raises(service.EditionError, match="time zone"):
            service.update_edition(session, edition, window_end=dt.datetime(2026, 1, 1), by="test",
                                   identity=IDENTITY)
        with pytest.raises(service.EditionError, match="subject cannot be empty"):
            service.update_edition(session, edition, subject="  ", by="test", identity=IDENTITY)


def test_default_window_starts_where_the_last_sent_edition_stopped(clean, tmp_path) -> None:
    now = utcnow()
    items = [{"id": f"recent-{days}", "url": f"https://www.cep-probation.org/recent-{days}/",
              "title": f"Published {days} days ago", "tags": ["News"],
              "date_published": (now - dt.timedelta(days=days)).isoformat()}
             for days in (1, 10, 40, 70)]
    (tmp_path / "recent.json").write_text(json.dumps({"items": items}))
    _import(tmp_path / "recent.json")

    with transaction() as session:
        first = service.draft_edition(session, identity=IDENTITY, by="test")
        # The first edition: the last two months (not the 70-day-old article).
        assert 59 <= (first.window_end - first.window_start).days <= 62
        assert len(first.articles) == 3
        first.window_end = now - dt.timedelta(days=5)
        transition(session, first, EditionState.sending)
        transition(session, first, EditionState.sent)

    with transaction() as session:
        second = service.draft_edition(session, identity=IDENTITY, by="test")
        assert second.window_start == first.window_end
        assert [link.article.title for link in second.articles] == ["Published 1 days ago"]
        assert second.slug != first.slug  # both dated this month, still unique


def test_only_drafts_and_scheduled_editions_can_change(clean) -> None:
    edition_id = _draft(CEP_FEED)
    with _edition(edition_id) as (session, edition):
        snapshot.freeze(session, edition, get_settings())
        assert edition.html_snapshot is not None
        # Editing a frozen draft throws the snapshot away: what goes out is what was
        # last previewed.
        service.update_edition(session, edition, intro="A new intro.", by="test", identity=IDENTITY)
        assert edition.html_snapshot is None and edition.archive_html is None
        snapshot.freeze(session, edition, get_settings())
        transition(session, edition, EditionState.sending)
        with pytest.raises(service.EditionError, match="is sending"):
            service.update_edition(session, edition, subject="Too late", by="test",
                                   identity=IDENTITY)
        with pytest.raises(service.EditionError, match="is sending"):
            service.drop_article(session, edition, edition.articles[0].article_id, by="test")
        assert edition.html_snapshot is not None


# --- the composed HTML ---------------------------------------------------------------------

@pytest.fixture
def full_edition(clean) -> int:
    """December's articles from three feeds, with images, and an intro with a link."""
    edition_id = _draft(CEP_FEED, FIXTURES / "atom-feed.xml", FIXTURES / "articles.json")
    with _edition(edition_id) as (session, edition):
        service.update_edition(
            session, edition, preheader="Our December news: CoPPer, stress and morale, MoU",
            intro="Welcome to the last edition of 2025.\n\nRegister for our conference at "
                  "https://www.cep-probation.org/events/2026/?lang=en&ref=nl.", by="test",
            identity=IDENTITY)
    return edition_id


def _inlined_and_web_copy(edition_id: int) -> tuple[str, str, str]:
    with _edition(edition_id) as (session, edition):
        composed = compose(edition, get_settings())
        preview = service.render_preview(session, edition, settings=get_settings())
    return composed.html, composed.archive_html, preview.html


def test_composed_html_has_no_external_css_scripts_or_forms(full_edition) -> None:
    inlined, _, preview = _inlined_and_web_copy(full_edition)
    doc = lxml.html.fromstring(preview)
    assert not doc.xpath("//link | //script | //form | //iframe | //object")
    assert preview.startswith("<!DOCTYPE html>")
    assert doc.xpath("//meta[@name='color-scheme']/@content") == ["light dark"]
    # Only @media rules are left in <style>, with their !important.
    styles = doc.xpath("//style")
    assert len(styles) == 1
    sheet = cssutils.parseString(styles[0].text, validate=False)
    assert {rule.type for rule in sheet.cssRules} == {cssutils.css.CSSRule.MEDIA_RULE}
    assert "!important" in styles[0].text
    # The 600 px layout tables.
    container = doc.find_class("container")[-1]
    assert container.get("width") == "600" and container.get("role") == "presentation"
    # The preheader is the first element of the body, hidden.
    first = doc.body[0]
    assert "preheader" in first.get("class") and "display:none" in first.get("style")
    assert first.text_content().startswith("Our December news: CoPPer")


def test_styles_are_inlined_on_every_element_the_css_matched(full_edition) -> None:
    inlined, web_copy, _ = _inlined_and_web_copy(full_edition)
    # The web copy keeps the CSS as written; the mail must carry it on the elements.
    source = lxml.html.fromstring(web_copy)
    sheet = cssutils.parseString("".join(s.text for s in source.xpath("//style")),
                                 validate=False)
    doc = lxml.html.fromstring(inlined)
    checked = 0
    for rule in sheet.cssRules:
        if rule.type != rule.STYLE_RULE:
            continue
        wanted = {prop.name for prop in rule.style}
        for selector in rule.selectorList:
            for element in doc.cssselect(selector.selectorText):
                inline = cssutils.parseStyle(element.get("style") or "", validate=False)
                present = {prop.name for prop in inline}
                missing = wanted - present
                assert not missing, (selector.selectorText, element.tag, missing)
                checked += 1
    assert checked > 100  # the rules did match the cards, sections, header and footer


def test_images_links_and_size(full_edition) -> None:
    _, _, preview = _inlined_and_web_copy(full_edition)
    doc = lxml.html.fromstring(preview)
    images = doc.xpath("//img")
    # copper (https), survey (upgraded to https), call for papers; not the dropped http
    # image, not the one whose size the feed did not give.
    assert len(images) == 3
    for img in images:
        assert img.get("alt"), lxml.html.tostring(img)
        assert img.get("width").isdigit() and img.get("height").isdigit()
        assert int(img.get("width")) <= 544
        assert img.get("src").startswith("https://")
    survey = doc.xpath("//img[@alt='Cover of the survey report']")[0]
    assert (survey.get("width"), survey.get("height")) == ("340", "340")  # square, capped
    copper = doc.xpath("//img[contains(@src, 'copper')]")[0]
    assert (copper.get("width"), copper.get("height")) == ("544", "306")  # 1200 × 675

    hrefs = doc.xpath("//a/@href")
    assert hrefs
    for href in hrefs:
        parts = urlsplit(href)
        assert parts.scheme in ("http", "https") and parts.netloc, href
    assert "https://www.cep-probation.org/events/2026/?lang=en&ref=nl" in hrefs

    size = len(preview.encode())
    assert size < get_settings().editions.html_budget_bytes
    assert "%%" not in preview  # every placeholder was filled


def test_text_part_carries_the_same_links_unsubscribe_and_address(full_edition) -> None:
    with _edition(full_edition) as (session, edition):
        preview = service.render_preview(session, edition, settings=get_settings())
        sample = service.sample_values(edition, get_settings().base_url)
    html_links = set(lxml.html.fromstring(preview.html).xpath("//a/@href"))
    assert set(links(preview.text)) == html_links
    for part in (preview.text, preview.html):
        assert sample["unsubscribe_url"] in part
        assert sample["view_url"] in part
        assert get_settings().identity.postal_address in part
        assert "Dear Maria," in part
        assert "maria.jansen@example.org" in part
    # The text part is written for text, not stripped from the HTML.
    assert "<" not in preview.text.replace("<https", "")
    assert "Read more: https://www.cep-probation.org/copper-final-conference/" in preview.text
    assert "CEP EVENTS\n==========" in preview.text


# --- the snapshot and the personaliser -----------------------------------------------------

def test_placeholders_survive_premailer(full_edition) -> None:
    with _edition(full_edition) as (session, edition):
        snapshot.freeze(session, edition, get_settings())
        html, text = edition.html_snapshot, edition.text_snapshot
        key = edition.placeholder_key
        assert edition.subject_snapshot == "CEP Newsletter – December 2025"
    doc = lxml.html.fromstring(html)
    assert doc.xpath(f"//a[@href='%%unsubscribe_url_{key}%%']")
    assert len(doc.xpath(f"//a[@href='%%view_url_{key}%%']")) == 2  # top and footer
    for token in (f"%%greeting_{key}%%", f"%%email_{key}%%"):
        assert token in html and token in text
    assert f"%%unsubscribe_url_{key}%%" in text and f"%%view_url_{key}%%" in text


def test_two_readers_differ_only_in_their_personal_parts(full_edition) -> None:
    with _edition(full_edition) as (session, edition):
        snapshot.freeze(session, edition, get_settings())
        base_url = get_settings().base_url
        personaliser = snapshot.personaliser_for(edition, base_url)
        assert snapshot.personaliser_for(edition, base_url) is personaliser  # built once
        view = snapshot.view_url(edition, base_url)
    anna = {"unsubscribe_url": "https://news.example/unsubscribe/aaaa.sig1", "view_url": view,
            "first_name": "Anna", "email": "anna@example.org"}
    bob = {"unsubscribe_url": "https://news.example/unsubscribe/bbbb.sig2", "view_url": view,
           "first_name": "", "email": "bob@example.net"}

    def neutral(part: str, values: dict[str, str], greeting: str) -> str:
        for value in (values["unsubscribe_url"], values["email"], greeting):
            part = part.replace(value, "<PERSONAL>")
        return part

    html_a, html_b = personaliser.html(anna), personaliser.html(bob)
    assert html_a != html_b
    assert neutral(html_a, anna, "Dear Anna,") == neutral(html_b, bob, "Dear reader,")
    text_a, text_b = personaliser.text(anna), personaliser.text(bob)
    assert neutral(text_a, anna, "Dear Anna,") == neutral(text_b, bob, "Dear reader,")
    assert "Dear reader," in html_b and "Dear ," not in html_b

    # Values are escaped in the HTML (text and attributes), left alone in the text.
    mallory = {**anna, "first_name": '<img src=x onerror="alert(1)">',
               "unsubscribe_url": 'https://news.example/u?a=1&b="x"'}
    html_m = personaliser.html(mallory)
    assert "<img src=x" not in html_m
    assert "Dear &lt;img src=x onerror=&quot;alert(1)&quot;&gt;," in html_m
    assert 'href="https://news.example/u?a=1&amp;b=&quot;x&quot;"' in html_m
    assert 'Dear <img src=x onerror="alert(1)">,' in personaliser.text(mallory)
    # A message without an unsubscribe link must not be made.
    with pytest.raises(service.EditionError, match="unsubscribe_url"):
        personaliser.html({**anna, "unsubscribe_url": ""})


def test_freeze_is_done_once_and_the_preview_is_the_snapshot(full_edition) -> None:
    with _edition(full_edition) as (session, edition):
        snapshot.freeze(session, edition, get_settings())
        frozen = (edition.html_snapshot, edition.text_snapshot, edition.archive_html)
    # A feed update after the freeze does not change what readers get.
    changed = CEP_FEED.read_text(encoding="utf-8").replace(
        "Why some court-ordered", "Why some court-ordered (edited)")
    path = Path(get_settings().outbox_dir).parent / "changed-feed.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(changed, encoding="utf-8")
    _import(path)
    with _edition(full_edition) as (session, edition):
        snapshot.freeze(session, edition, get_settings())  # a no-op
        assert (edition.html_snapshot, edition.text_snapshot, edition.archive_html) == frozen
        preview = service.render_preview(session, edition, settings=get_settings())
        base_url = get_settings().base_url
        values = service.sample_values(edition, base_url)
        assert preview.html == snapshot.personaliser_for(edition, base_url).html(values)
        assert "(edited)" not in preview.html
        service.check_sendable(session, edition, settings=get_settings())
    # The archive copy has nothing personal and no placeholder.
    archive = frozen[2]
    assert "%%" not in archive and "/unsubscribe/" not in archive
    assert "Dear reader," in archive and "View this email in your browser" not in archive


def test_an_edition_without_articles_or_over_budget_cannot_be_sent(clean) -> None:
    empty = _draft(CEP_FEED, window_start=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                   window_end=dt.datetime(2020, 2, 1, tzinfo=dt.UTC))
    with _edition(empty) as (session, edition):
        with pytest.raises(service.NotSendable, match="no articles"):
            service.check_sendable(session, edition, settings=get_settings())
        with pytest.raises(service.NotSendable, match="no articles"):
            snapshot.freeze(session, edition, get_settings())
        assert edition.html_snapshot is None

    big = _draft()
    with _edition(big) as (session, edition):
        paragraph = "Probation services across Europe share their practice. " * 40
        service.update_edition(session, edition, intro="\n\n".join([paragraph] * 50), by="test",
                               identity=IDENTITY)
    with _edition(big) as (session, edition):
        with pytest.raises(service.NotSendable) as raised:
            service.check_sendable(session, edition, settings=get_settings())
        message = str(raised.value)
        found = re.search(r"The HTML is ([\d,]+) bytes, over the 102,400-byte budget by "
                          r"([\d,]+) bytes", message)
        assert found, message
        size, over = (int(n.replace(",", "")) for n in found.groups())
        assert size - 102_400 == over > 0
        with pytest.raises(service.NotSendable, match="over the 102,400-byte budget"):
            snapshot.freeze(session, edition, get_settings())
        assert edition.html_snapshot is None


# --- the command line, as the README shows it ----------------------------------------------

def test_readme_steps_import_new_show_preview(clean, tmp_path) -> None:
    mailer = [str(Path(sys.executable).parent / "mailer")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*mailer, *args], env={**clean.env, "COLUMNS": "120"},
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    imported = run("articles", "import", str(CEP_FEED))
    assert imported.returncode == 0, imported.stderr
    assert "7 new, 0 updated, 0 unchanged" in imported.stdout

    drafted = run("editions", "new", "--since", "2025-12-01", "--until", "2025-12-31")
    assert drafted.returncode == 0, drafted.stderr
    edition_id = re.search(r"Drafted edition (\d+)", drafted.stdout).group(1)
    assert "6 article(s)" in drafted.stdout
    # The window is shown with its last day, never as "to 01/01/2026 00:00".
    assert "published 1 December 2025 – 31 December 2025." in drafted.stdout
    listed = run("editions", "list")
    assert "31 December 2025" in listed.stdout and "2026" not in listed.stdout

    shown = run("editions", "show", edition_id)
    assert shown.returncode == 0, shown.stderr
    assert "Window: articles published 1 December 2025 – 31 December 2025" in shown.stdout
    assert "Why some court-ordered psychiatric patients remain in prison in Europe" in shown.stdout
    assert "Mental Health" in shown.stdout

    out = tmp_path / "edition.html"
    preview = run("editions", "preview", edition_id, "--out", str(out), "--text",
                  str(tmp_path / "edition.txt"))
    assert preview.returncode == 0, preview.stderr
    with _edition(int(edition_id)) as (session, edition):
        expected = service.render_preview(session, edition, settings=get_settings())
    assert out.read_text(encoding="utf-8") == expected.html
    assert (tmp_path / "edition.txt").read_text(encoding="utf-8") == expected.text

    empty = run("editions", "new")  # the default window: nothing since two months
    assert "No article was published in that window" in empty.stderr
    assert "18 December 2025" in empty.stderr
    missing = run("editions", "preview", "999", "--out", str(out))
    assert missing.returncode == 1 and "no edition 999" in missing.stderr


# --- in a real browser ----------------------------------------------------------------------

def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A plain PNG, standing in for the articles' pictures (the test stays offline)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


_COLOURS_JS = """
() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = parse(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const picks = ['.content', '.greeting', '.intro', '.section-title', '.badge', '.card-title a',
                 '.card-date', '.card-excerpt', '.read-more a', '.footer p', '.footer a',
                 '.top a', '.brand', '.kicker', '.button a'];
  const out = [];
  for (const sel of picks) {
    for (const el of document.querySelectorAll(sel)) {
      out.push([sel, parse(getComputedStyle(el).color).slice(0, 3), background(el)]);
    }
  }
  return out;
}
"""

_OVERFLOW_JS = """
() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter((el) => el.getBoundingClientRect().right > width + 0.5)
    .map((el) => el.tagName + '.' + el.className);
  return {scrollWidth: document.documentElement.scrollWidth, width, wide};
}
"""

_IMAGES_JS = """
() => [...document.images].map((img) => {
  const r = img.getBoundingClientRect();
  return {complete: img.complete && img.naturalWidth > 0, right: r.right,
          shown: r.width / r.height,
          declared: img.getAttribute('width') / img.getAttribute('height')};
})
"""


def _luminance(rgb: list[float]) -> float:
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: list[float], b: list[float]) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.browser
def test_screenshots_at_600_and_375_light_and_dark(clean, full_edition, browser,
                                                   artifacts) -> None:
    with _edition(full_edition) as (session, edition):
        page_html = service.render_preview(session, edition, settings=get_settings()).html
    # Each picture is served at its real proportions (the feed's width and height).
    pictures = {img.get("src"): _png(int(img.get("width")), int(img.get("height")),
                                     (120, 150, 180))
                for img in lxml.html.fromstring(page_html).xpath("//img")}

    def route(r) -> None:  # type: ignore[no-untyped-def]
        if r.request.url in pictures:
            r.fulfill(status=200, content_type="image/png", body=pictures[r.request.url])
        else:
            r.abort()

    for width in (600, 375):
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport={"width": width, "height": 900},
                                    color_scheme=scheme)
            try:
                page.route("**/*", route)
                page.set_content(page_html, wait_until="load")
                name = f"digest-{width}-{scheme}-{clean.backend}.png"
                page.screenshot(path=str(artifacts / name), full_page=True)
                assert (artifacts / name).stat().st_size > 10_000

                layout = page.evaluate(_OVERFLOW_JS)
                assert layout["scrollWidth"] <= width, layout
                assert layout["wide"] == [], layout
                # Every picture drawn with its proportions, within the column.
                for box in page.evaluate(_IMAGES_JS):
                    assert box["complete"] and box["right"] <= width, box
                    assert abs(box["shown"] - box["declared"]) < 0.02, box

                # Readable: text against what is behind it, WCAG AA (4.5:1).
                samples = page.evaluate(_COLOURS_JS)
                assert len(samples) > 40
                for selector, colour, behind in samples:
                    assert _contrast(colour, behind) >= 4.5, (scheme, selector, colour, behind)
                # And the scheme did switch: the column is dark in dark mode, light in light.
                behind_content = samples[0][2]
                assert (_luminance(behind_content) < 0.1) == (scheme == "dark"), samples[0]
            finally:
                page.close()
