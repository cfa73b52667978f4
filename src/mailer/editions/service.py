"""Editions of the digest: drafting one, choosing its articles, previewing and checking it.

An edition covers a window of time: by default from the cutoff of the previous edition
that went out (or two months back for the first one) up to now, and starts with every
article published in it, newest first. Staff then drop, add and reorder articles, set the
order of the categories and write an intro. Changing the window chooses the articles
again from the new window.

Every change is allowed only while the edition is a draft or scheduled, and discards a
snapshot frozen earlier, so what is sent is always what was last previewed. Functions take
the caller's session and never commit. Every change names who made it (``by``: a staff
member's address, ``cli:<user>``, ``schedule``) and writes its audit entry in the same
transaction, so a change from the CLI is in the log as one from the admin is.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.articles.models import Article
from mailer.audit import record
from mailer.config import ArticleSettings, IdentitySettings, Settings
from mailer.db import transaction, utcnow
from mailer.editions import snapshot, variants
from mailer.editions.compose import (
    category_order,
    month_label,
    month_slug,
    reading_order,
    section_of,
)
from mailer.editions.errors import (
    AlreadyInEdition,
    EditionError,
    NotEditable,
    NotInEdition,
    NotSendable,
    UnknownArticle,
)
from mailer.editions.models import Edition, EditionArticle, EditionState
from mailer.editions.states import EDITABLE, GONE_OUT
from mailer.lists.models import MailingList
from mailer.lists.service import default_list
from mailer.localtime import last_day, window_label
from mailer.subscribers.welcome_mail import LatestEdition

__all__ = [
    "AlreadyInEdition", "EditionError", "EmptyWindow", "NotEditable", "NotInEdition",
    "NotSendable", "RenderedEdition", "UnknownArticle", "add_article",
    "archived_edition", "archived_editions", "candidate_articles",
    "check_sendable", "draft_edition", "drop_article", "filed_articles", "move_article",
    "render_preview", "set_articles", "step_article", "update_edition",
]

FIRST_EDITION_MONTHS = 2


class EmptyWindow(EditionError):
    """No article was published in the window, and the caller wanted none drafted then."""

    def __init__(self, start: dt.datetime, end: dt.datetime, zone: ZoneInfo) -> None:
        self.window = window_label(start, end, zone=zone)
        super().__init__(f"No article was published {self.window}, so no edition was drafted.")


@dataclass(frozen=True)
class RenderedEdition:
    subject: str
    html: str
    text: str


def draft_edition(session: Session, *, subject: str | None = None,
                  window_start: dt.datetime | None = None, window_end: dt.datetime | None = None,
                  by: str, identity: IdentitySettings, require_articles: bool = False,
                  audit: bool = True, mailing_list: MailingList | None = None) -> Edition:
    """A new draft for ``mailing_list`` (the default list when None) with every article of
    its window, newest first (its subject, unless given, is the list's name and the month).
    The window starts where the list's last edition that went out ended.

    ``require_articles``: raise :class:`EmptyWindow` instead of drafting an empty edition.
    ``audit=False`` is for a caller that writes a fuller entry itself (the schedule)."""
    lst = mailing_list or default_list(session)
    if lst.archived_at is not None:
        raise EditionError(f"the list {lst.slug!r} is archived: it takes no new editions")
    end = _aware(window_end, "window end") or utcnow()
    start = (_aware(window_start, "window start") or _previous_cutoff(session, lst.id)
             or _months_before(end, FIRST_EDITION_MONTHS))
    _check_window(start, end)
    articles = [a.id for a in _window_articles(session, start, end)]
    if require_articles and not articles:
        raise EmptyWindow(start, end, identity.zone)
    edition = Edition(
        list_id=lst.id,
        slug=_unique_slug(session, f"{month_slug(end, zone=identity.zone)}-{lst.slug}"),
        subject=(_subject(subject) if subject
                 else f"{lst.name} – {month_label(end, zone=identity.zone)}"),
        window_start=start,
        window_end=end,
        category_order=[],
        created_by=by[:200],
    )
    session.add(edition)
    session.flush()
    set_articles(session, edition, articles)
    if audit:
        _audit(session, by, "edition.draft", edition, {"articles": len(edition.articles)})
    return edition


def update_edition(session: Session, edition: Edition, *, subject: str | None = None,
                   preheader: str | None = None, intro: str | None = None,
                   window_start: dt.datetime | None = None, window_end: dt.datetime | None = None,
                   category_order: list[str] | None = None, by: str,
                   identity: IdentitySettings) -> Edition:
    """Change what is given; a new window chooses the articles again (its last day, in the
    audit entry, is a day in ``identity.zone``).

    Audited as ``edition.edit`` (the words and the sections) and ``edition.window``."""
    _ensure_editable(edition)
    if subject is not None:
        edition.subject = _subject(subject)
    if preheader is not None:
        edition.preheader = _one_line(preheader, "preheader", 300)
    if intro is not None:
        edition.intro = intro.replace("\r\n", "\n").strip()
    if category_order is not None:
        edition.category_order = _category_order(category_order)
    if window_start is not None or window_end is not None:
        start = _aware(window_start, "window start") or edition.window_start
        end = _aware(window_end, "window end") or edition.window_end
        _check_window(start, end)
        edition.window_start, edition.window_end = start, end
        set_articles(session, edition, [a.id for a in _window_articles(session, start, end)])
    _forget_snapshot(edition)
    session.flush()
    if any(v is not None for v in (subject, preheader, intro, category_order)):
        _audit(session, by, "edition.edit", edition, {
            "subject": edition.subject, "preheader": edition.preheader,
            "categories": edition.category_order})
    if window_start is not None or window_end is not None:
        _audit(session, by, "edition.window", edition, {
            "from": edition.window_start.isoformat(),
            "to_and_including": last_day(edition.window_end, zone=identity.zone).isoformat(),
            "articles": len(edition.articles)})
    return edition


def set_articles(session: Session, edition: Edition, article_ids: list[int]) -> None:
    """The edition's articles become exactly these, in this order."""
    _ensure_editable(edition)
    if len(set(article_ids)) != len(article_ids):
        raise EditionError("an article appears twice in the list")
    found = {a.id: a for a in session.scalars(
        select(Article).where(Article.id.in_(article_ids)))} if article_ids else {}
    missing = [str(i) for i in article_ids if i not in found]
    if missing:
        raise UnknownArticle(f"there is no article with id {', '.join(missing)}")
    # Rows of articles that stay are kept (the (edition, article) pair is unique, and a
    # flush inserts before it deletes), rows of dropped articles are deleted as orphans.
    current = {link.article_id: link for link in edition.articles}
    links = []
    for position, article_id in enumerate(article_ids):
        link = current.pop(article_id, None) or EditionArticle(article=found[article_id])
        link.position = position
        links.append(link)
    edition.articles = links
    _forget_snapshot(edition)
    session.flush()


def add_article(session: Session, edition: Edition, article_id: int, *, by: str) -> None:
    """Add an article (from the window or not) at the end of the edition."""
    _ensure_editable(edition)
    ids = _article_ids(edition)
    if article_id in ids:
        raise AlreadyInEdition(f"article {article_id} is already in this edition")
    set_articles(session, edition, [*ids, article_id])
    _audit(session, by, "edition.article.add", edition, {"article": article_id})


def drop_article(session: Session, edition: Edition, article_id: int, *, by: str) -> None:
    _ensure_editable(edition)
    ids = _article_ids(edition)
    if article_id not in ids:
        raise NotInEdition(f"article {article_id} is not in this edition")
    set_articles(session, edition, [i for i in ids if i != article_id])
    _audit(session, by, "edition.article.drop", edition, {"article": article_id})


def move_article(session: Session, edition: Edition, article_id: int, position: int, *,
                 by: str, action: str = "edition.article.move") -> None:
    """Move an article to ``position`` (0 is the first) in the edition's order."""
    _ensure_editable(edition)
    ids = _article_ids(edition)
    if article_id not in ids:
        raise NotInEdition(f"article {article_id} is not in this edition")
    if not 0 <= position < len(ids):
        raise EditionError(f"position {position + 1} is outside 1–{len(ids)}")
    ids.remove(article_id)
    ids.insert(position, article_id)
    set_articles(session, edition, ids)
    _audit(session, by, action, edition, {"article": article_id, "position": position + 1})


def step_article(session: Session, edition: Edition, article_id: int, step: int, *,
                 by: str, articles: ArticleSettings) -> None:
    """Move an article before the previous (``step`` -1) or after the next (+1) one of its
    section, as the reader sees them (sections filed by ``articles``): the edition's order
    decides only within a section."""
    ordered = reading_order([link.article for link in edition.articles], edition.category_order,
                            articles)
    index = next((i for i, (_, a) in enumerate(ordered) if a.id == article_id), None)
    if index is None:
        raise NotInEdition(f"article {article_id} is not in this edition")
    section = ordered[index][0]
    neighbour = index + step
    if not 0 <= neighbour < len(ordered) or ordered[neighbour][0] != section:
        raise EditionError("It is already the " + ("first" if step < 0 else "last")
                           + f" article of “{section}”. Change the order of the "
                           "sections to move it further.")
    ids = _article_ids(edition)
    move_article(session, edition, article_id, ids.index(ordered[neighbour][1].id), by=by,
                 action="edition.article." + ("up" if step < 0 else "down"))


def filed_articles(edition: Edition, *, articles: ArticleSettings) -> list[tuple[str, Article]]:
    """The edition's articles in its own order (the one positions count in), each with the
    section a reader finds it under (filed by ``articles``)."""
    order = category_order(edition.category_order, articles)
    return [(section_of(link.article, order, articles), link.article)
            for link in edition.articles]


def candidate_articles(session: Session, edition: Edition) -> list[Article]:
    """Articles of the edition's window that are not in it (dropped, or new since)."""
    chosen = set(_article_ids(edition))
    return [a for a in _window_articles(session, edition.window_start, edition.window_end)
            if a.id not in chosen]


def render_preview(session: Session, edition: Edition, *, settings: Settings,
                   articles: Sequence[int] | None = None) -> RenderedEdition:
    """The edition exactly as a reader gets it, with sample personal values filled in:
    the frozen snapshot once there is one, else a fresh composition of the same kind.
    ``articles``: the variant with these of its articles (topics; ``mailer.editions.
    variants``), frozen or composed now."""
    if articles is None or tuple(articles) == tuple(_article_ids(edition)):
        personaliser = snapshot.as_mailed(edition, settings).personaliser
    else:
        personaliser = _variant_as_mailed(session, edition, settings, tuple(articles))
    values = sample_values(edition, settings.base_url)
    return RenderedEdition(subject=personaliser.subject(values), html=personaliser.html(values),
                           text=personaliser.text(values))


def _variant_as_mailed(session: Session, edition: Edition, settings: Settings,
                       articles: tuple[int, ...]) -> snapshot.Personaliser:
    if not articles:
        raise EditionError("that variant has no articles: its readers are skipped")
    if edition.html_snapshot is not None:
        for row in variants.variants_of(session, edition.id):
            if tuple(row.article_ids) == articles:
                return snapshot.variant_personaliser(edition, row, settings.base_url)
    composed = variants.compose_variants(edition, settings, [articles])[0][0]
    return snapshot.Personaliser(composed.subject, composed.html, composed.text,
                                 key=composed.placeholder_key,
                                 defaults={"view_url": snapshot.view_url(edition,
                                                                         settings.base_url)})


def sample_values(edition: Edition, base_url: str) -> dict[str, str]:
    """A made-up reader for previews (the unsubscribe link has a real link's shape, but
    names nobody)."""
    return {
        "unsubscribe_url": f"{base_url}/unsubscribe/preview",
        "view_url": snapshot.view_url(edition, base_url),
        "first_name": "Maria",
        "email": "maria.jansen@example.org",
        "preferences_url": f"{base_url}/preferences/preview",
    }


def check_sendable(session: Session, edition: Edition, *, settings: Settings) -> None:
    """Raise :class:`NotSendable` with the reason if the edition cannot be sent as it is
    (composed with ``settings``, within ``settings.editions.html_budget_bytes``)."""
    snapshot.as_mailed(edition, settings, check=True)


def archived_editions(session: Session) -> list[Edition]:
    """The editions that went out, newest first: the web archive's list."""
    return list(session.scalars(
        select(Edition).join(MailingList, MailingList.id == Edition.list_id)
        .where(Edition.state == EditionState.sent, Edition.archive_html.is_not(None),
               MailingList.archive.is_(True))
        .order_by(Edition.finished_at.desc(), Edition.id.desc())))


def latest_edition_link(base_url: str) -> LatestEdition | None:
    """The newest sent edition's subject and archive page (under ``base_url``), for the
    welcome mail: a new reader's first look at what they subscribed to. ``None`` before the
    first is sent."""
    with transaction() as session:
        newest = session.scalars(
            select(Edition).where(Edition.state == EditionState.sent,
                                  Edition.archive_html.is_not(None))
            .order_by(Edition.finished_at.desc(), Edition.id.desc()).limit(1)).first()
        if newest is None:
            return None
        return LatestEdition(subject=newest.subject_snapshot or newest.subject,
                             url=snapshot.view_url(newest, base_url))


def archived_edition(session: Session, slug: str) -> Edition | None:
    """The edition behind a "view in browser" link, once it has started to go out (a reader
    may open it while the rest are still being sent); never a draft."""
    edition = session.scalars(select(Edition).where(Edition.slug == slug)).first()
    if edition is None or edition.archive_html is None or edition.started_at is None:
        return None
    return edition


# --- helpers -------------------------------------------------------------------------------

def _audit(session: Session, by: str, action: str, edition: Edition,
           detail: dict[str, Any]) -> None:
    record(session, actor=by or "unknown", action=action, target=f"edition:{edition.id}",
           detail=detail)


def _ensure_editable(edition: Edition) -> None:
    if edition.state not in EDITABLE:
        raise NotEditable(f"Edition {edition.id} is {edition.state}: it can only be changed "
                           "while it is a draft or scheduled.")


def _forget_snapshot(edition: Edition) -> None:
    edition.subject_snapshot = edition.html_snapshot = None
    edition.text_snapshot = edition.archive_html = edition.placeholder_key = None


def _article_ids(edition: Edition) -> list[int]:
    return [link.article_id for link in edition.articles]


def _window_articles(session: Session, start: dt.datetime, end: dt.datetime) -> list[Article]:
    return list(session.scalars(
        select(Article)
        .where(Article.published_at >= start, Article.published_at < end)
        .order_by(Article.published_at.desc(), Article.id.desc())
    ))


def _previous_cutoff(session: Session, list_id: int) -> dt.datetime | None:
    return session.scalar(select(func.max(Edition.window_end))
                          .where(Edition.state.in_(GONE_OUT), Edition.list_id == list_id))


def _months_before(moment: dt.datetime, months: int) -> dt.datetime:
    year, month = divmod(moment.year * 12 + moment.month - 1 - months, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _aware(value: dt.datetime | None, what: str) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise EditionError(f"the {what} needs a time zone")
    return value


def _check_window(start: dt.datetime, end: dt.datetime) -> None:
    if start >= end:
        raise EditionError("the window must start before it ends")


def _one_line(value: str, what: str, limit: int) -> str:
    line = " ".join(value.split())
    if len(line) > limit:
        raise EditionError(f"the {what} is {len(line)} characters long; at most {limit}")
    return line


def _subject(value: str) -> str:
    subject = _one_line(value, "subject", 300)
    if not subject:
        raise EditionError("the subject cannot be empty")
    return subject


def _category_order(names: list[str]) -> list[str]:
    order = [" ".join(name.split()) for name in names]
    if any(not name for name in order):
        raise EditionError("a category name cannot be empty")
    if len(set(order)) != len(order):
        raise EditionError("a category appears twice in the order")
    return order


def _unique_slug(session: Session, base: str) -> str:
    taken = set(session.scalars(select(Edition.slug).where(Edition.slug.like(f"{base}%"))))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"
