"""``/api/v1/articles/import``: articles from a feed's address, or items the caller sends
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

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailer.api_tokens.service import Caller
from mailer.articles import feeds
from mailer.articles.importer import import_feed
from mailer.config import get_settings
from mailer.db import transaction
from mailer.web.api.auth import require
from mailer.web.api.problems import ApiProblem, field_errors, responses

router = APIRouter(prefix="/articles", tags=["articles"])

MAX_ITEMS = 100


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
