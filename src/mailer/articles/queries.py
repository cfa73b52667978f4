"""Reads of the articles for the API's list: newest first, a page at a time.

A page is found by keyset, as the subscribers' search is: ``before_id`` names the last
article of the page before, and the next page holds the articles published before it (or
at the same time, with a smaller id), so a page costs the same deep in the list as at its
start (the index ``ix_article_published_id``), and an import between two pages neither
repeats nor skips an article of the pages already read."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from mailer.articles.models import Article
from mailer.localtime import midnight

_MAX_ID = 2**31 - 1  # PostgreSQL's INTEGER


def article_list(session: Session, *, limit: int, before_id: int | None = None,
                 since: dt.date | None = None, until: dt.date | None = None,
                 category: str = "", title: str = "", zone: ZoneInfo) -> list[Article]:
    """Articles newest first (by publication time, then id): published from ``since`` up to
    and including ``until`` (days in ``zone``), filed under ``category`` (one of their
    categories, exactly), whose title contains ``title`` (any case)."""
    query = select(Article).order_by(Article.published_at.desc(), Article.id.desc())
    if before_id is not None:
        if before_id > _MAX_ID:  # past any id the column holds: nothing is after it
            return []
        # The cursor article's time, read in the same statement: a cursor that names no
        # article (deleted meanwhile, or made up) gives an empty page, not every article.
        cursor_at = select(Article.published_at).where(Article.id == before_id) \
            .scalar_subquery()
        query = query.where(or_(Article.published_at < cursor_at,
                                and_(Article.published_at == cursor_at,
                                     Article.id < before_id)))
    if since is not None and since > dt.date.min:  # the first day bounds nothing
        query = query.where(Article.published_at >= midnight(since, zone=zone))
    if until is not None and until < dt.date.max:  # nor does the last
        query = query.where(Article.published_at
                            < midnight(until + dt.timedelta(days=1), zone=zone))
    if category:
        query = query.where(_filed_under(session, category))
    if title:
        query = query.where(Article.title.icontains(title, autoescape=True))
    return list(session.scalars(query.limit(limit)))


def _filed_under(session: Session, category: str) -> ColumnElement[bool]:
    """The article's JSON list of categories holds ``category``: each database's own
    function that opens a JSON array (a LIKE on the JSON text would match a part of a
    name, or a quote inside one)."""
    opens = (func.json_array_elements_text if session.get_bind().dialect.name == "postgresql"
             else func.json_each)
    names = opens(Article.categories).table_valued("value")
    return exists(select(1).select_from(names).where(names.c.value == category))
