"""``/api/v1/articles``: the articles imported so far (newest first, a page at a time, by
publication day, category or a word of the title) and one of them, for a client that puts
editions together (``editions:read``: reading them reaches nobody's inbox, and the
``articles`` scope stays the publishing hook's, which only imports).

``/api/v1/articles/import``: articles from a feed's address, or items the caller sends
(a website's publishing hook), stored as the admin's and the command line's import stores
them (``articles.importer.import_feed``: by guid, an update never a duplicate, audited as
``articles.import`` by ``api:<token name>``).

An address is fetched by ``feeds.load``, so the admin's rules hold: http(s) only, public
addresses only unless allowed (``MAILER_FEED_ALLOWED_HOSTS``), one deadline, a size cap.
Items go through the same parser as a JSON Feed file (``feeds.parse``): the same checks
and the same HTML sanitiser. A feed that cannot be fetched or read is a 422 naming
``url``; an item that cannot be used is named in ``problems``, the rest are kept.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailer.api_tokens.service import Caller
from mailer.articles import feeds, queries
from mailer.articles.importer import import_feed
from mailer.articles.models import Article
from mailer.config import get_settings
from mailer.db import transaction
from mailer.web.api.auth import require
from mailer.web.api.problems import ApiProblem, field_errors, responses
from mailer.web.api.subscribers import TEXT
from mailer.web.bounds import RowId

router = APIRouter(prefix="/articles", tags=["articles"])

MAX_ITEMS = 100
READ = Depends(require("editions:read"))


class ArticleOut(BaseModel):
    id: int
    title: str
    link: str
    published_at: dt.datetime
    categories: list[str]
    author: str
    #: The article's summary as plain text (the digest shows it on the article's card).
    summary: str
    image_url: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, a: Article) -> ArticleOut:
        return cls(id=a.id, title=a.title, link=a.link, published_at=a.published_at,
                   categories=list(a.categories or []), author=a.author,
                   summary=a.summary_text, image_url=a.image_url, created_at=a.created_at,
                   updated_at=a.updated_at)


class ArticlePage(BaseModel):
    items: list[ArticleOut]
    #: Pass as ``after`` for the next (older) page; null on the last one.
    next: str | None


class ArticleListing(BaseModel):
    """The list's query string; a parameter it does not know is a 422, not ignored."""

    model_config = ConfigDict(extra="forbid")
    since: dt.date | None = Field(None, description="published on this day or later "
                                                    "(the association's time zone)")
    until: dt.date | None = Field(None, description="published on this day or earlier")
    category: str = Field("", max_length=200, pattern=TEXT,
                          description="one of the article's categories, exactly")
    title: str = Field("", max_length=200, pattern=TEXT,
                       description="a part of the title, in any case")
    after: str | None = Field(None, max_length=20, pattern=r"^[0-9]{1,18}$",
                              description="`next` of the page before")
    limit: int = Field(50, ge=1, le=200)


@router.get("", response_model=ArticlePage, summary="List articles",
            responses=responses(400, 401, 403, 422, 429))
def list_articles(caller: Annotated[Caller, READ],
                  params: Annotated[ArticleListing, Query()]) -> ArticlePage:
    """Newest first (by publication time), a page at a time (keyset pagination)."""
    if params.since and params.until and params.since > params.until:
        raise ApiProblem(422, "The list would end before it starts.",
                         errors=field_errors(until="this day is before since"))
    with transaction() as session:
        found = queries.article_list(
            session, limit=params.limit + 1, since=params.since, until=params.until,
            category=" ".join(params.category.split()), title=params.title.strip(),
            before_id=int(params.after) if params.after else None,
            zone=get_settings().identity.zone)
        page = [ArticleOut.of(a) for a in found[:params.limit]]
    more = str(page[-1].id) if len(found) > params.limit else None
    return ArticlePage(items=page, next=more)


@router.get("/{article_id}", response_model=ArticleOut, summary="One article",
            responses=responses(400, 401, 403, 404, 422, 429))
def get_one(caller: Annotated[Caller, READ], article_id: RowId) -> ArticleOut:
    with transaction() as session:
        article = session.get(Article, article_id)
        if article is None:
            raise ApiProblem(404, "There is no article with this id.")
        return ArticleOut.of(article)


class ImageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000)
    width: int | None = Field(None, ge=0, le=100_000)
    height: int | None = Field(None, ge=0, le=100_000)
    alt: str = Field("", max_length=500)


class ArticleItem(BaseModel):
    """One article, with JSON Feed 1.1's names."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, max_length=500, description="its guid; the url if absent")
    url: str = Field(max_length=2000, description="the article's http(s) address")
    title: str = Field(max_length=500)
    date_published: str = Field(max_length=64, description="RFC 3339: 2025-03-01T09:30:00+01:00")
    tags: list[Annotated[str, Field(max_length=100)]] = Field([], max_length=50)
    author: str = Field("", max_length=200)
    content_html: str = Field("", max_length=100_000, description="sanitised on import")
    summary: str = Field("", max_length=20_000, description="plain text, if no content_html")
    image: ImageIn | None = None


class ArticleImport(BaseModel):
    """A feed's address, or the items themselves: one of the two."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, max_length=2000, description="an RSS, Atom or JSON feed")
    items: list[ArticleItem] | None = Field(None, min_length=1, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _one_source(self) -> ArticleImport:
        if (self.url is None) == (self.items is None):
            raise ValueError("give a feed's url or a list of items: one of the two")
        return self


class ArticleReport(BaseModel):
    #: The feed's address, or ``api:<token name>`` for items.
    source: str
    created: int
    updated: int
    unchanged: int
    #: One line per item that could not be used (it was skipped; the rest are stored).
    problems: list[str]


@router.post("/import", response_model=ArticleReport, summary="Import articles",
             responses=responses(400, 401, 403, 422, 429))
def import_articles(caller: Annotated[Caller, Depends(require("articles"))],
                    body: ArticleImport) -> ArticleReport:
    """Articles from a feed's address (fetched as the admin fetches it) or from the items
    given; stored by guid, so a repeat changes nothing and an edited article is updated."""
    if body.url is not None:
        url = body.url.strip()
        if not feeds.is_web_address(url):
            raise ApiProblem(422, "The feed's address must be a web address (https://…).",
                             errors=field_errors(url="not an http(s) address"))
        try:
            settings = get_settings()  # no transaction while fetching
            feed = feeds.load(url, settings.articles, website_url=settings.identity.website_url)
        except feeds.FeedError as exc:
            raise ApiProblem(422, f"Nothing was imported: {exc}",
                             errors=field_errors(url=str(exc))) from None
    else:
        assert body.items is not None
        data = json.dumps({"items": [_json_feed_item(i) for i in body.items]}).encode()
        try:
            settings = get_settings()
            feed = feeds.parse(data, source=caller.actor, articles=settings.articles,
                               website_url=settings.identity.website_url)
        except feeds.FeedError as exc:  # not expected for JSON we wrote; still no 5xx
            raise ApiProblem(422, f"Nothing was imported: {exc}",
                             errors=field_errors(items=str(exc))) from None
    with transaction() as session:
        report = import_feed(session, feed, by=caller.actor)  # audited there
    return ArticleReport(source=report.source, created=report.created,
                         updated=report.updated, unchanged=report.unchanged,
                         problems=report.problems)


def _json_feed_item(item: ArticleItem) -> dict[str, Any]:
    return item.model_dump(exclude_none=True)
