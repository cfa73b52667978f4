"""Reading a feed (RSS 2.0, Atom or JSON) into clean, checked items.

``load(source, settings, website_url=…)`` fetches a URL or reads a file and returns a
:class:`Feed`: the items that are complete and safe, and a list of problems, one line per
item that could not be used (no link, no date…), each naming the item. A source that is
not a feed at all raises :class:`FeedError`. Nothing here touches the database: the
importer stores what we return.

Decisions worth knowing:
- feedparser's own HTML sanitiser is off; nh3 (``sanitise.py``) is the one authority, so
  RSS, Atom and JSON items are cleaned the same way.
- The publication time keeps the zone the feed wrote it in (feedparser only gives UTC).
- Category names are spelled as ``ArticleSettings.categories`` spells them.
- Images: an ``https`` image is kept; an ``http`` image on the association's own website
  (``website_url``, from ``IdentitySettings``) is upgraded to ``https`` (the site serves
  everything over https); any other ``http`` image is dropped, as mail clients warn about
  or block mixed content. Its size comes from the feed
  (``media:content``/``media:thumbnail`` width and height, or the width and height of the
  first ``<img>`` in the article, which WordPress always writes); the digest shows an
  image only when it knows its size. Images under 120 × 60 px are icons, emoji or
  tracking pixels, not the article's picture: they are left out.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
import lxml.html

from mailer.articles.fetch import FetchError, fetch
from mailer.articles.sanitise import clean_html, plain_text
from mailer.config import ArticleSettings


class FeedError(Exception):
    """The source as a whole cannot be read as a feed (unreachable, not a feed, too big)."""


@dataclass(frozen=True)
class Image:
    url: str
    width: int | None
    height: int | None
    alt: str


@dataclass(frozen=True)
class FeedItem:
    guid: str
    link: str
    title: str
    published: dt.datetime  # timezone-aware, in the zone the feed gave
    categories: tuple[str, ...]
    author: str
    summary_html: str  # sanitised
    image: Image | None


@dataclass
class Feed:
    source: str
    items: list[FeedItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class ItemProblem(ValueError):
    """One item cannot be used; the message says why."""


#: A JSON item whose fields have the wrong types (a number for a title, a string for the
#: tags) is one bad item, never a crash: the file comes from outside, the admin uploads it.
_WRONG_TYPE = (TypeError, ValueError, AttributeError, KeyError, IndexError)
WRONG_TYPE = "a field has the wrong type (text, list or object expected)"


def is_web_address(url: str) -> bool:
    """An absolute http(s) address (what an import fetches). urlsplit raises ValueError
    for some strings (``http://[::1``): that is not one either."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def load(source: str, settings: ArticleSettings, *, website_url: str) -> Feed:
    """Fetch (http/https URL, see ``fetch.py`` for what may be fetched) or read (file path)
    ``source`` and parse it (see :func:`parse`), within the limits of ``settings``.
    Synchronous: call it from a worker thread, not a coroutine."""
    return parse(read(source, settings), source=source, articles=settings,
                 website_url=website_url)


def read(source: str, settings: ArticleSettings) -> bytes:
    if urlsplit(source).scheme in ("http", "https"):
        return _fetch(source, settings)
    path = Path(source)
    if not path.is_file():
        raise FeedError(f"{source}: no such file (give a file path or an http(s) URL)")
    limit = settings.feed_max_bytes
    if path.stat().st_size > limit:
        raise FeedError(f"{source}: larger than {limit:,} bytes, refused")
    return path.read_bytes()


def _fetch(url: str, settings: ArticleSettings) -> bytes:
    try:
        return fetch(url, settings)  # public addresses only, one deadline, a size cap: fetch.py
    except FetchError as exc:
        raise FeedError(str(exc)) from exc


def parse(data: bytes, *, source: str, articles: ArticleSettings, website_url: str) -> Feed:
    """Items and problems from a feed's bytes; JSON when it looks like JSON, else XML. The
    categories are spelled as ``articles.categories`` has them; ``website_url`` is the
    association's own site (its ``http`` images are upgraded to ``https``)."""
    head = data.lstrip()[:1]
    if source.lower().endswith(".json") or head in (b"{", b"["):
        raws, problems = _json_items(data, source)
    else:
        raws, problems = _xml_items(data, source)
    feed = Feed(source=source, problems=problems)
    known = {name.casefold(): name for name in articles.categories}
    own_site = (urlsplit(website_url).hostname or "").removeprefix("www.")
    seen: dict[str, int] = {}
    for number, raw in enumerate(raws, start=1):
        try:
            item = _make_item(raw, known=known, own_site=own_site)
        except ItemProblem as exc:
            feed.problems.append(f"item {number} {_name(raw)}: {exc}; skipped")
            continue
        except _WRONG_TYPE:
            feed.problems.append(f"item {number}: {WRONG_TYPE}; skipped")
            continue
        if item.guid in seen:
            feed.problems.append(
                f"item {number} {_name(raw)}: same guid as item {seen[item.guid]}; skipped")
            continue
        seen[item.guid] = number
        feed.items.append(item)
    return feed


def _name(raw: dict[str, Any]) -> str:
    title = plain_text(raw.get("title") or "")
    if title:
        return f'"{title[:80]}"'
    return f"(guid {raw['guid']})" if raw.get("guid") else "(no title, no guid)"


# --- XML: RSS 2.0 and Atom through feedparser ---------------------------------------------

def _xml_items(data: bytes, source: str) -> tuple[list[dict[str, Any]], list[str]]:
    parsed = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=True)
    problems: list[str] = []
    if parsed.bozo:
        reason = _bozo_reason(parsed.get("bozo_exception"))
        if not parsed.get("version") or not parsed.entries:
            raise FeedError(f"{source}: not an RSS or Atom feed ({reason})")
        problems.append(f"the feed is not well-formed XML ({reason}); "
                        "the items that could be read in full were imported")
    elif not parsed.get("version"):
        raise FeedError(f"{source}: not an RSS or Atom feed (no <rss> or <feed> element)")
    site = parsed.feed.get("link") or ""
    return [_from_feedparser(entry, site) for entry in parsed.entries], problems


def _bozo_reason(exc: object) -> str:
    text = str(exc or "unreadable").strip()
    return text[:200] or type(exc).__name__


def _from_feedparser(entry: Any, site: str) -> dict[str, Any]:
    summary = entry.get("summary") or ""
    content = " ".join(c.get("value", "") for c in entry.get("content") or [])
    link = entry.get("link") or ""
    return {
        "guid": entry.get("id") or link,
        "link": urljoin(site, link) if link else "",
        "title": entry.get("title") or "",
        "published": entry.get("published") or entry.get("updated") or "",
        "published_parsed": entry.get("published_parsed") or entry.get("updated_parsed"),
        "categories": [t.get("term") or t.get("label") or "" for t in entry.get("tags") or []],
        "author": entry.get("author") or "",
        "summary_html": summary or content,
        "image": _feed_image(entry, content or summary),
    }


def _feed_image(entry: Any, article_html: str) -> dict[str, Any] | None:
    for media in (entry.get("media_content") or []):
        if media.get("medium") == "image" or str(media.get("type", "")).startswith("image/"):
            return {"url": media.get("url"), "width": media.get("width"),
                    "height": media.get("height")}
    for thumb in (entry.get("media_thumbnail") or []):
        return {"url": thumb.get("url"), "width": thumb.get("width"),
                "height": thumb.get("height")}
    for link in (entry.get("links") or []):
        if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/"):
            return {"url": link.get("href"), "width": None, "height": None}
    return _first_img(article_html)


def _first_img(fragment: str) -> dict[str, Any] | None:
    if "<img" not in fragment:
        return None
    try:
        img = next(lxml.html.fromstring(f"<div>{fragment}</div>").iter("img"), None)
    except (ValueError, lxml.etree.ParserError):
        return None
    if img is None:
        return None
    return {"url": img.get("src"), "width": img.get("width"), "height": img.get("height"),
            "alt": img.get("alt") or ""}


# --- JSON: JSON Feed 1.1, or a bare list of its items -------------------------------------

def _json_items(data: bytes, source: str) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeedError(f"{source}: not valid JSON ({exc})") from exc
    items = document.get("items") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise FeedError(f"{source}: a JSON feed needs an 'items' list (JSON Feed 1.1) "
                        "or must be a list of items")
    raws: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            problems.append(f"item {number}: not a JSON object; skipped")
            continue
        try:
            raws.append(_from_json(item))
        except _WRONG_TYPE:
            problems.append(f"item {number}: {WRONG_TYPE}; skipped")
    return raws, problems


def _from_json(item: dict[str, Any]) -> dict[str, Any]:
    authors = item.get("authors") or ([item["author"]] if item.get("author") else [])
    author = authors[0] if authors else ""
    summary = item.get("content_html") or item.get("summary_html") or ""
    if not summary:
        text = item.get("summary") or item.get("content_text") or ""
        summary = "".join(f"<p>{_escape(p)}</p>" for p in str(text).split("\n\n") if p.strip())
    image = item.get("image")
    return {
        "guid": str(item.get("id") or item.get("guid") or item.get("url") or ""),
        "link": str(item.get("url") or item.get("link") or ""),
        "title": str(item.get("title") or ""),
        "published": str(item.get("date_published") or item.get("published") or ""),
        "published_parsed": None,
        "categories": [str(t) for t in item.get("tags") or item.get("categories") or []],
        "author": str(author.get("name", "") if isinstance(author, dict) else author),
        "summary_html": str(summary),
        "image": image if isinstance(image, dict) else ({"url": image} if image else None),
    }


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- one item, checked ------------------------------------------------------------------

def _make_item(raw: dict[str, Any], *, known: dict[str, str], own_site: str) -> FeedItem:
    link = str(raw.get("link") or "").strip()
    if not link:
        raise ItemProblem("no link")
    if urlsplit(link).scheme not in ("http", "https") or not urlsplit(link).netloc:
        raise ItemProblem(f"the link {link[:100]!r} is not an absolute http(s) address")
    if len(link) > 2000:
        raise ItemProblem("the link is longer than 2,000 characters")
    published = _parse_time(str(raw.get("published") or ""), raw.get("published_parsed"))
    if published is None:
        raise ItemProblem("no publication date" if not raw.get("published")
                          else f"unreadable publication date {raw['published']!r}")
    title = plain_text(str(raw.get("title") or ""))
    if not title:
        raise ItemProblem("no title")
    guid = str(raw.get("guid") or link).strip()
    if len(guid) > 500:
        raise ItemProblem("the guid is longer than 500 characters")
    return FeedItem(
        guid=guid,
        link=link,
        title=title[:500],
        published=published,
        categories=_categories(raw.get("categories") or [], known),
        author=plain_text(str(raw.get("author") or ""))[:200],
        summary_html=clean_html(str(raw.get("summary_html") or ""), base_url=link),
        image=_image(raw.get("image"), link=link, title=title, own_site=own_site),
    )


def _parse_time(value: str, fallback: Any = None) -> dt.datetime | None:
    """An aware datetime in the zone the feed wrote; RFC 822 (RSS) or RFC 3339 (Atom, JSON)."""
    value = value.strip()
    parsed: dt.datetime | None = None
    if value:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                parsed = None
    if parsed is None and fallback:  # a format only feedparser understands: UTC
        year, month, day, hour, minute, second = fallback[:6]
        parsed = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)  # "-0000" or no zone at all: take it as UTC
    return parsed


def _categories(values: list[Any], known: dict[str, str]) -> tuple[str, ...]:
    """Unique names, in the feed's order, spelled as the association spells them (``known``:
    each category by its case-folded name)."""
    result: list[str] = []
    for value in values:
        name = plain_text(str(value))[:100]
        name = known.get(name.casefold(), name)
        if name and name not in result:
            result.append(name)
    return tuple(result)


MIN_IMAGE_WIDTH, MIN_IMAGE_HEIGHT = 120, 60
_DIGITS = re.compile(r"^\s*(\d{1,5})(?:px)?\s*$")


def _image(raw: Any, *, link: str, title: str, own_site: str) -> Image | None:
    if not isinstance(raw, dict) or not raw.get("url"):
        return None
    url = urljoin(link, str(raw["url"]).strip())
    parts = urlsplit(url)
    if parts.scheme == "http" and _is_own_site(parts.hostname or "", own_site):
        url = "https" + url[len("http"):]
    elif parts.scheme != "https":
        return None
    if len(url) > 2000:
        return None
    width, height = _pixels(raw.get("width")), _pixels(raw.get("height"))
    if width and height and (width < MIN_IMAGE_WIDTH or height < MIN_IMAGE_HEIGHT):
        return None  # an icon, an emoji or a tracking pixel, not the article's picture
    if not (width and height):
        width = height = None
    alt = plain_text(str(raw.get("alt") or "")) or title
    return Image(url=url, width=width, height=height, alt=alt[:500])


def _is_own_site(host: str, own_site: str) -> bool:
    """Is ``host`` the association's site (``own_site``: its host name without ``www.``)?"""
    return bool(own_site) and host.removeprefix("www.") == own_site


def _pixels(value: Any) -> int | None:
    match = _DIGITS.match(str(value or ""))
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None
