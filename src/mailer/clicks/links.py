"""An edition's links, rewritten once per snapshot to go through ``/r/…`` and be counted.

``freeze`` hands the composed HTML and text here. Every distinct ``http(s)`` link that does
not lead to this service's own pages (the archive, the sign-up form) gets a position, and
is replaced in both parts by ``{base_url}/r/{edition}/{position}/{signature}``. The
signature is an HMAC over the edition and the position only: nothing in the link tells one
reader from another, and every reader's message carries the same bytes but for the
personal parts it had before (the greeting, the unsubscribe link).

A link that was not made by us (a tampered signature, a position the edition does not
have) leads nowhere: the route answers 404 and redirects to nothing, so ``/r/`` cannot be
used to send people to a site of someone else's choosing.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import tokens
from mailer.clicks.models import EditionLink

PURPOSE = "click"  # the tokens purpose: a click link's signature is worth nothing elsewhere
SIGNATURE_LENGTH = 22  # base64 characters: 132 bits
_ANCHOR = re.compile(r'<a\b([^>]*?)\bhref="(https?://[^"]+)"([^>]*)>(.*?)</a>',
                     re.IGNORECASE | re.DOTALL)
_ARIA_LABEL = re.compile(r'aria-label="([^"]*)"', re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_TEXT_URL = re.compile(r"https?://[^\s<>\"']+")
LABEL_LENGTH = 300


@dataclass(frozen=True)
class Link:
    position: int
    url: str
    label: str


@dataclass(frozen=True)
class Rewritten:
    html: str
    text: str
    links: list[Link]


def signature(edition_id: int, position: int) -> str:
    return tokens.sign(PURPOSE, f"{edition_id}.{position}", length=SIGNATURE_LENGTH)


def is_signed(edition_id: int, position: int, given: str) -> bool:
    return (len(given) == SIGNATURE_LENGTH
            and tokens.verify(PURPOSE, f"{edition_id}.{position}", given))


def tracked_url(base_url: str, edition_id: int, position: int) -> str:
    return f"{base_url}/r/{edition_id}/{position}/{signature(edition_id, position)}"


def rewrite(html_part: str, text_part: str, *, edition_id: int, base_url: str) -> Rewritten:
    """Both parts with their links going through ``/r/``, and the links in order of first
    appearance (the HTML's, then any the text part has alone)."""
    own = base_url.rstrip("/") + "/"
    positions: dict[str, int] = {}
    labels: dict[str, str] = {}

    def position_of(url: str) -> int | None:
        if url.startswith(own) or url == own.rstrip("/"):
            return None
        if url not in positions:
            positions[url] = len(positions) + 1
        return positions[url]

    def in_html(match: re.Match[str]) -> str:
        before, href, after, inner = match.groups()
        url = html.unescape(href)
        position = position_of(url)
        if position is None:
            return match.group(0)
        if not labels.get(url):
            aria = _ARIA_LABEL.search(before + after)
            label = aria.group(1) if aria else _TAG.sub("", inner)
            labels[url] = " ".join(html.unescape(label).split())[:LABEL_LENGTH]
        tracked = tracked_url(base_url, edition_id, position)
        return f'<a{before}href="{tracked}"{after}>{inner}</a>'

    def in_text(match: re.Match[str]) -> str:
        url = match.group(0).rstrip(".,;:!?)")  # the sentence's, not the link's
        position = position_of(url)
        if position is None:
            return match.group(0)
        return tracked_url(base_url, edition_id, position) + match.group(0)[len(url):]

    new_html = _ANCHOR.sub(in_html, html_part)
    new_text = _TEXT_URL.sub(in_text, text_part)
    links = [Link(position, url, labels.get(url, "")) for url, position in positions.items()]
    return Rewritten(new_html, new_text, links)


def destination(session: Session, edition_id: int, position: int) -> str | None:
    """Where a signed link of an edition leads (None: the edition has no such link)."""
    key = (edition_id, position)
    url = _destinations.get(key)
    if url is None:
        url = session.scalar(select(EditionLink.url).where(
            EditionLink.edition_id == edition_id, EditionLink.position == position))
        if url is not None:  # only what is there is remembered: a later freeze may add it
            if len(_destinations) >= _REMEMBERED:
                _destinations.clear()
            _destinations[key] = url
    return url


#: The links of recent editions, remembered by each web process: a redirect then reads no
#: database. A link's URL never changes once its edition is sent; before (an edited draft,
#: whose test copies are the only mail with its links) it may, for a test copy's click.
_destinations: dict[tuple[int, int], str] = {}
_REMEMBERED = 10_000
