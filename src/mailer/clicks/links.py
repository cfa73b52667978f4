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
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import redis as redis_lib
from sqlalchemy import column, select, table
from sqlalchemy.orm import Session

from mailer import tokens
from mailer.clicks.models import EditionLink

PURPOSE = "click"  # the tokens purpose: a click link's signature is worth nothing elsewhere
SIGNATURE_LENGTH = 22  # base64 characters: 132 bits
_ANCHOR = re.compile(r'<a\b([^>]*?)\bhref="(https?://[^"]+)"([^>]*)>(.*?)</a>',
                     re.IGNORECASE | re.DOTALL)
_ARIA_LABEL = re.compile(r'aria-label="([^"]*)"', re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_TEXT_URL = re.compile(r"https?://\S+")
_SENTENCE = re.compile(r"[.,;:!?)\]'\"»”’]+")
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


def signature(edition_id: int, position: int, *, keys: Sequence[bytes]) -> str:
    return tokens.sign(PURPOSE, f"{edition_id}.{position}", length=SIGNATURE_LENGTH, keys=keys)


def is_signed(edition_id: int, position: int, given: str, *, keys: Sequence[bytes]) -> bool:
    return (len(given) == SIGNATURE_LENGTH
            and tokens.verify(PURPOSE, f"{edition_id}.{position}", given, keys=keys))


def tracked_url(base_url: str, edition_id: int, position: int, *,
                keys: Sequence[bytes]) -> str:
    return f"{base_url}/r/{edition_id}/{position}/{signature(edition_id, position, keys=keys)}"


def rewrite(html_part: str, text_part: str, *, edition_id: int, base_url: str,
            keys: Sequence[bytes], known: Sequence[Link] = ()) -> Rewritten:
    """Both parts with their links going through ``/r/``, and the links in the order they
    first appear in the HTML; each signed with ``keys`` (``Settings.all_secrets``).

    ``known``: links the edition already has (those of its whole snapshot, for one of its
    variants): they keep their positions, and a new link gets the next one; the result
    lists the known links first.

    The HTML's links are the list. The text part gets the same tracked link wherever it
    spells one of them out (as written there, or as the HTML percent-encodes it); a link
    the text part has alone, or one it cannot tell apart from the words around it, stays
    as it is. It is not counted, but it leads where it should."""
    own = base_url.rstrip("/") + "/"
    positions: dict[str, int] = {link.url: link.position for link in known}
    labels: dict[str, str] = {link.url: link.label for link in known}
    top = max(positions.values(), default=0)

    def in_html(match: re.Match[str]) -> str:
        before, href, after, inner = match.groups()
        url = html.unescape(href)
        if url.startswith(own) or url == own.rstrip("/"):
            return match.group(0)
        nonlocal top
        if url not in positions:
            top += 1
            positions[url] = top
        position = positions[url]
        if not labels.get(url):
            aria = _ARIA_LABEL.search(before + after)
            label = aria.group(1) if aria else _TAG.sub("", inner)
            labels[url] = " ".join(html.unescape(label).split())[:LABEL_LENGTH]
        tracked = tracked_url(base_url, edition_id, position, keys=keys)
        return f'<a{before}href="{tracked}"{after}>{inner}</a>'

    new_html = _ANCHOR.sub(in_html, html_part)
    spelled = {}  # every way the text part may write a link of the HTML → its position
    for url, position in positions.items():
        spelled[url] = spelled[unquote(url)] = position
    longest_first = sorted(spelled, key=len, reverse=True)

    def in_text(match: re.Match[str]) -> str:
        found = match.group(0)
        for url in longest_first:
            if found.startswith(url) and not _continues(found[len(url):]):
                return (tracked_url(base_url, edition_id, spelled[url], keys=keys)
                        + found[len(url):])
        return found

    new_text = _TEXT_URL.sub(in_text, text_part)
    links = [Link(position, url, labels.get(url, "")) for url, position in positions.items()]
    return Rewritten(new_html, new_text, links)


def _continues(rest: str) -> bool:
    """Whether what follows a known link in the text is more of a (longer) address, rather
    than the sentence's punctuation ("…/article." or "(see …/article)")."""
    return bool(rest) and not _SENTENCE.fullmatch(rest)


#: The edition table by its name (this package stays below the editions one), and the
#: states in which an edition's snapshot, and so its links, may still be made again
#: (``editions.states.EDITABLE``; tests/test_clicks.py checks that they agree).
_EDITION = table("edition", column("id"), column("state"))
CHANGING = ("draft", "scheduled")


def destination(session: Session, edition_id: int, position: int) -> tuple[str, bool] | None:
    """Where a signed link of an edition leads, and whether that is for good: once an
    edition has gone out its links never change. None: the edition has no such link."""
    row = session.execute(
        select(EditionLink.url, _EDITION.c.state)
        .join(_EDITION, _EDITION.c.id == EditionLink.edition_id)
        .where(EditionLink.edition_id == edition_id, EditionLink.position == position)
    ).first()
    return None if row is None else (row.url, row.state not in CHANGING)


#: Where the links of an edition that has gone out lead, in Redis: ``HGET`` by position
#: (:func:`mailer.clicks.counting.recall_and_count` reads it as it counts the click).
DESTINATIONS_KEY = "clicks:to:"
DESTINATIONS_TTL = 3600  # seconds: a busy edition's links are looked up once an hour


def remember(client: redis_lib.Redis, edition_id: int, position: int, url: str) -> None:
    """Keep where a link of an edition that has gone out leads (its links never change
    again), so the next click on it, in any web process, costs no database round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.hset(f"{DESTINATIONS_KEY}{edition_id}", str(position), url)
    pipe.expire(f"{DESTINATIONS_KEY}{edition_id}", DESTINATIONS_TTL)
    pipe.execute()
