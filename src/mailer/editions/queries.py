"""Reads of the editions for the staff's lists, written once for the web and the CLI."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.articles.models import Article
from mailer.editions.models import Edition, EditionArticle
from mailer.localtime import format_date

_MAX_ID = 2**31 - 1  # PostgreSQL's INTEGER


@dataclass
class EditionList:
    """Editions, newest first, with how many articles each has."""

    editions: list[Edition]
    articles: dict[int, int] = field(default_factory=dict)


def edition_list(session: Session, *, limit: int | None = None, before_id: int | None = None,
                 state: str | None = None) -> EditionList:
    """``before_id``: only editions older than that one (keyset pagination, newest first);
    ``state``: only editions in that state."""
    query = select(Edition).order_by(Edition.id.desc())
    # An id past any the column holds bounds nothing (and PostgreSQL refuses its bind).
    if before_id is not None and before_id <= _MAX_ID:
        query = query.where(Edition.id < before_id)
    if state is not None:
        query = query.where(Edition.state == state)
    editions = list(session.scalars(query.limit(limit) if limit is not None else query))
    return EditionList(editions, articles={e: int(n) for e, n in session.execute(
        select(EditionArticle.edition_id, func.count())
        .where(EditionArticle.edition_id.in_([e.id for e in editions]))
        .group_by(EditionArticle.edition_id))})


def newest_articles(session: Session, limit: int = 8) -> list[Article]:
    return list(session.scalars(select(Article).order_by(Article.published_at.desc())
                                .limit(limit)))


def newest_article_at(session: Session) -> dt.datetime | None:
    return session.scalar(select(func.max(Article.published_at)))


def empty_window_hint(session: Session, *, earlier: str, none_yet: str, zone: ZoneInfo) -> str:
    """What to do about a window without articles: start it before the newest article
    (``earlier`` says how, in the caller's terms; its day in ``zone``), or import some
    (``none_yet``)."""
    newest = newest_article_at(session)
    if newest is None:
        return none_yet
    return f"The newest article is from {format_date(newest, zone=zone)}: {earlier}."
