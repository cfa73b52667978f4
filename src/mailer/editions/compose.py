"""Composing a digest: from an edition's articles to its subject, HTML and text.

The templates are ``templates/email/digest/{subject.txt, body.txt, body.html}`` on the shared
base layout. What differs between readers is not rendered here: the mail parts carry
placeholders (``%%unsubscribe_url_<key>%%``…) that ``snapshot.Personaliser`` fills in per
reader, so the CSS is inlined once per edition and never per message. The archive copy
(the "view in browser" page) is the same template without any personal part.

Feed content is data, never a placeholder: the key is 128 random bits drawn for each
composition and kept with the frozen snapshot, never shown to anyone, so a feed item that
writes ``%%email%%`` (or any placeholder it could guess) into its link, image, title or
summary stays that text in every reader's mail.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from mailer.articles.models import Article
from mailer.articles.sanitise import excerpt
from mailer.config import ArticleSettings, Settings
from mailer.editions.models import Edition
from mailer.emails.render import inline_css, jinja_env
from mailer.localtime import MONTHS, format_date, last_day

#: What the sending pipeline fills in per reader.
PERSONAL_FIELDS = ("unsubscribe_url", "view_url", "first_name", "email", "preferences_url")
#: What a snapshot holds placeholders for: the personal fields, and the greeting made from
#: the first name (so that an empty name still reads well, see ``greeting_for``).
PLACEHOLDER_FIELDS = (*PERSONAL_FIELDS, "greeting")


def placeholders(key: str | None) -> dict[str, str]:
    """The placeholder of each field in a snapshot composed with ``key``. ``None``: the bare
    ``%%email%%`` of the snapshots frozen before keys were drawn (editions still going out
    when the service was upgraded)."""
    suffix = f"_{key}" if key else ""
    return {name: f"%%{name}{suffix}%%" for name in PLACEHOLDER_FIELDS}


def new_placeholder_key() -> str:
    return secrets.token_hex(16)

GREETING_NAMED = "Dear {first_name},"
GREETING_ANONYMOUS = "Dear reader,"
#: Said beside the intro field (admin) and in ``mailer editions edit --help``.
INTRO_HINT = ("Every mail begins with its own greeting, "
              f"“{GREETING_NAMED.format(first_name='Maria')}” (the reader's first name) or "
              f"“{GREETING_ANONYMOUS}”; the intro follows it, so do not begin it with one.")
_GREETING = re.compile(r"(dear|hello|hi|greetings|good (morning|afternoon|evening))\b",
                       re.IGNORECASE)

CONTENT_WIDTH = 544  # 600 px less the content's 28 px padding on each side
MAX_IMAGE_HEIGHT = 340
EXCERPT_CHARS = 280


@dataclass(frozen=True)
class CardImage:
    url: str
    width: int
    height: int
    alt: str


@dataclass(frozen=True)
class Card:
    title: str
    url: str
    date: str
    categories: list[str]
    excerpt: str
    image: CardImage | None
    article_id: int = 0  # which article: a variant keeps the cards of its articles


@dataclass(frozen=True)
class Section:
    name: str
    cards: list[Card]


@dataclass(frozen=True)
class Composed:
    subject: str
    html: str  # CSS inlined, with placeholders
    text: str  # with placeholders
    archive_html: str  # the web copy, no personal part
    article_count: int
    placeholder_key: str  # what the placeholders of html and text end in


def compose(edition: Edition, settings: Settings) -> Composed:
    """Render and inline the edition once; the result is what every reader's mail is made of."""
    env = jinja_env()
    context = digest_context(edition, settings)
    page = env.get_template("email/digest/body.html")
    subject = env.get_template("email/digest/subject.txt").render(**context)
    key = new_placeholder_key()
    personal = placeholders(key)
    mail = {"personal": personal, "greeting": personal["greeting"]}
    web = {"personal": None, "greeting": GREETING_ANONYMOUS}
    return Composed(
        subject=" ".join(subject.split()),
        html=inline_css(page.render(**context, **mail)),
        text=env.get_template("email/digest/body.txt").render(**context, **mail),
        # A browser reads <style>: the web copy needs no inlining.
        archive_html=page.render(**context, **web),
        article_count=context["article_count"],
        placeholder_key=key,
    )


class Marks:
    """The HTML comments around each section and card of a composition made to be cut into
    variants (``mailer.editions.variants``): ``<!--v<key>:card:<article id>-->`` … The key
    is the composition's placeholder key, so no feed text (which is escaped anyway) can
    write one; the comments are taken out of every part that is stored or mailed."""

    def __init__(self, key: str) -> None:
        self.prefix = f"v{key}:" if key else ""

    def _mark(self, what: str) -> Markup:
        # Our own characters only: a hex key, a fixed word, an article id.
        return Markup(f"<!--{self.prefix}{what}-->") if self.prefix else Markup("")  # noqa: S704

    def section(self) -> Markup:
        return self._mark("section")

    def end_section(self) -> Markup:
        return self._mark("/section")

    def card(self, card: Card) -> Markup:
        return self._mark(f"card:{card.article_id}")

    def end_card(self) -> Markup:
        return self._mark("/card")


NO_MARKS = Marks("")


def greeting_for(first_name: str) -> str:
    name = " ".join(first_name.split())
    return GREETING_NAMED.format(first_name=name) if name else GREETING_ANONYMOUS


def digest_context(edition: Edition, settings: Settings) -> dict[str, Any]:
    website = settings.identity.website_url
    articles = [link.article for link in edition.articles]
    return {
        "settings": settings,
        "edition": edition,
        # "December 2025"
        "edition_date": month_label(edition.window_end, zone=settings.identity.zone),
        "sections": sections(articles, edition.category_order, settings.articles,
                             zone=settings.identity.zone),
        "article_count": len(articles),
        "intro_paragraphs": intro_paragraphs(edition.intro),
        "intro_text": edition.intro.strip(),
        "preheader": edition.preheader.strip() or default_preheader(articles),
        "website_host": urlsplit(website).hostname or website,
        "subscribe_url": f"{settings.base_url}/subscribe",
        "archive_url": f"{settings.base_url}/archive",
        "marks": NO_MARKS,
    }


def category_order(staff_order: list[str], filing: ArticleSettings) -> list[str]:
    """The staff's order first, then the association's categories they did not name."""
    order = list(staff_order)
    order += [name for name in filing.categories if name not in order]
    return order


def shown_categories(categories: list[str], filing: ArticleSettings) -> list[str]:
    """The article's categories a reader may see: not the website's default category."""
    unfiled = {name.casefold() for name in filing.unfiled_categories}
    return [name for name in categories if name.casefold() not in unfiled]


def section_of(article: Article, order: list[str], filing: ArticleSettings) -> str:
    """The first of the article's categories the digest knows, else its first, else (filed
    under nothing but the website's default category) the general section, "News"."""
    categories = shown_categories(article.categories, filing)
    for name in categories:
        if name in order:
            return name
    return categories[0] if categories else filing.general_section


def reading_order(articles: list[Article], staff_order: list[str],
                  filing: ArticleSettings) -> list[tuple[str, Article]]:
    """(section, article) as a reader meets them: sections in order, and within each the
    articles in the edition's order."""
    order = category_order(staff_order, filing)
    rank = {name: i for i, name in enumerate(order)}
    placed = [(section_of(article, order, filing), article) for article in articles]
    # sorted() is stable: within a section the edition's order stays.
    return sorted(placed, key=lambda pair: (rank.get(pair[0], len(rank)), pair[0].casefold()))


def sections(articles: list[Article], staff_order: list[str],
             filing: ArticleSettings, *, zone: ZoneInfo) -> list[Section]:
    grouped: dict[str, list[Card]] = {}
    for name, article in reading_order(articles, staff_order, filing):
        grouped.setdefault(name, []).append(card(article, section=name, filing=filing,
                                                 zone=zone))
    return [Section(name=name, cards=cards) for name, cards in grouped.items()]


def card(article: Article, *, section: str, filing: ArticleSettings, zone: ZoneInfo) -> Card:
    return Card(
        title=article.title,
        url=article.link,
        date=format_date(article.published_at, zone=zone),
        # The section's heading already names its category: a badge repeats only the others.
        categories=[name for name in shown_categories(article.categories, filing)
                    if name != section],
        excerpt=excerpt(article.summary_text, EXCERPT_CHARS),
        image=card_image(article),
        article_id=article.id or 0,
    )


def card_image(article: Article) -> CardImage | None:
    """The article's image at the size the card draws it, if we know its size."""
    url, width, height = article.image_url, article.image_width, article.image_height
    if not (url and url.startswith("https://") and width and height):
        return None
    shown_width = min(CONTENT_WIDTH, width)
    shown_height = round(shown_width * height / width)
    if shown_height > MAX_IMAGE_HEIGHT:  # a tall picture would push the text off screen
        shown_height = MAX_IMAGE_HEIGHT
        shown_width = round(MAX_IMAGE_HEIGHT * width / height)
    return CardImage(url=url, width=shown_width, height=shown_height,
                     alt=article.image_alt or article.title)


def month_label(window_end: dt.datetime, *, zone: ZoneInfo) -> str:
    """The month an edition is named after: that of the last day its window covers in
    ``zone`` (a window up to 1 January 00:00 is December's)."""
    day = last_day(window_end, zone=zone)
    return f"{MONTHS[day.month - 1]} {day.year}"


def month_slug(window_end: dt.datetime, *, zone: ZoneInfo) -> str:
    return f"{last_day(window_end, zone=zone):%Y-%m}"


def intro_greeting(intro: str) -> str | None:
    """The intro's first line if it is a greeting of its own ("Dear colleagues,"): the
    reader would be greeted twice, "Dear Maria, / Dear colleagues,"."""
    first = intro.strip().split("\n", 1)[0].strip()
    return first if first and len(first) <= 80 and _GREETING.match(first) else None


def twice_greeted(intro: str) -> str:
    """What to tell the staff member whose intro begins with a greeting ("" if it does not)."""
    greeting = intro_greeting(intro)
    if greeting is None:
        return ""
    named = GREETING_NAMED.format(first_name="Maria")
    return (f"The intro begins with “{greeting}”, but every mail already begins with "
            f"“{named}” (or “{GREETING_ANONYMOUS}”): readers would be greeted twice. Take "
            "the greeting out of the intro unless that is what you want.")


def default_preheader(articles: list[Article]) -> str:
    """The line a mail program shows after the subject, drawn from the edition's titles."""
    if not articles:
        return ""
    return excerpt("In this edition: " + " · ".join(a.title for a in articles), 140)


_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def intro_paragraphs(intro: str) -> list[Markup]:
    """The staff's intro, plain text with blank lines between paragraphs, as safe HTML:
    everything escaped, web addresses made into links, single line breaks kept."""
    return [
        Markup("<br>\n").join(_linked(line.strip()) for line in block.strip().split("\n"))
        for block in _PARAGRAPH_BREAK.split(intro.strip()) if block.strip()
    ]


def _linked(line: str) -> Markup:
    pieces: list[Markup] = []
    last = 0
    for match in _URL.finditer(line):
        pieces.append(escape(line[last:match.start()]))
        pieces.append(Markup('<a href="{0}">{0}</a>').format(match.group(0)))
        last = match.end()
    pieces.append(escape(line[last:]))
    return Markup("").join(pieces)
