"""``/api/v1/editions/{edition_id}/articles``: an edition's articles, and choosing them
while the edition may still change (a draft, or scheduled: nothing has gone out).

The admin's edition editor's actions over the same service functions
(``editions.service``): an article added (at the end), dropped, or moved to a new
position, each audited there (``edition.article.add``, ``.drop``, ``.move``) as
``api:<token name>``. Positions count from 1 in the edition's own order; a reader meets
the articles by section (``category_order``) and, within a section, in this order.

An edition that has started to go out (or was cancelled) answers 409, and so does an
article added twice; an article that is not in the edition is a 404 for a drop or a move,
an article that does not exist a 422 naming ``article_id``, a position past the last a
422 naming ``position``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from mailer.api_tokens.service import Caller
from mailer.config import get_settings
from mailer.db import transaction
from mailer.editions import service as editions
from mailer.editions.models import Edition, EditionState
from mailer.editions.states import EDITABLE
from mailer.web.api.articles import ArticleOut
from mailer.web.api.auth import require
from mailer.web.api.editions import WRITE_ERRORS, find_edition
from mailer.web.api.problems import ApiProblem, field_errors, responses
from mailer.web.bounds import MAX_ID, RowId

router = APIRouter(prefix="/editions/{edition_id}/articles", tags=["editions"])

READ = Depends(require("editions:read"))
SEND = Depends(require("editions:send"))


class EditionArticle(ArticleOut):
    #: Its place in the edition's order, from 1.
    position: int
    #: The section of the mail a reader finds it in.
    section: str


class EditionArticles(BaseModel):
    edition_id: int
    state: EditionState
    #: False once the edition has started to go out (or was cancelled): no change then.
    editable: bool
    items: list[EditionArticle]
    #: Articles of the edition's window that are not in it (dropped, or imported since):
    #: the ones the admin offers to add. Empty once the edition cannot change.
    candidates: list[ArticleOut]

    @classmethod
    def of(cls, session: Session, edition: Edition) -> EditionArticles:
        filed = editions.filed_articles(edition, articles=get_settings().articles)
        editable = edition.state in EDITABLE
        return cls(edition_id=edition.id, state=EditionState(edition.state), editable=editable,
                   items=[EditionArticle(**ArticleOut.of(a).model_dump(), position=i,
                                         section=section)
                          for i, (section, a) in enumerate(filed, start=1)],
                   candidates=[ArticleOut.of(a) for a in editions.candidate_articles(
                       session, edition)] if editable else [])


class ArticleToAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    article_id: int = Field(ge=1, le=MAX_ID, description="an article's id (GET /articles)")


class NewPosition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    position: int = Field(ge=1, le=MAX_ID, description="1 is the first")


def _change(edition_id: int, change: Callable[[Session, Edition], None],
            field: str) -> EditionArticles:
    """One change of the service in one transaction, its refusals as problems (``field``
    names what the caller sent when the change itself cannot be made)."""
    with transaction() as session:
        edition = find_edition(session, edition_id)
        try:
            change(session, edition)
        except (editions.NotEditable, editions.AlreadyInEdition) as exc:
            raise ApiProblem(409, str(exc)) from None
        except editions.NotInEdition as exc:
            raise ApiProblem(404, f"{str(exc).capitalize()}.") from None
        except editions.EditionError as exc:  # no such article; a position past the last
            raise ApiProblem(422, f"{str(exc).capitalize()}.",
                             errors=field_errors(**{field: str(exc)})) from None
        return EditionArticles.of(session, edition)


@router.get("", response_model=EditionArticles, summary="An edition's articles",
            responses=responses(400, 401, 403, 404, 422, 429))
def list_articles(caller: Annotated[Caller, READ], edition_id: RowId) -> EditionArticles:
    """In the edition's order, each with its position and section; and, while it may
    change, the articles of its window it does not have."""
    with transaction() as session:
        return EditionArticles.of(session, find_edition(session, edition_id))


@router.post("", response_model=EditionArticles, summary="Add an article to an edition",
             responses=WRITE_ERRORS)
def add_article(caller: Annotated[Caller, SEND], edition_id: RowId,
                body: ArticleToAdd) -> EditionArticles:
    """At the end of the edition's order (from its window or not)."""
    return _change(edition_id, lambda session, edition: editions.add_article(
        session, edition, body.article_id, by=caller.actor), "article_id")


@router.delete("/{article_id}", response_model=EditionArticles,
               summary="Drop an article from an edition", responses=WRITE_ERRORS)
def drop_article(caller: Annotated[Caller, SEND], edition_id: RowId,
                 article_id: RowId) -> EditionArticles:
    """The article stays among the candidates, to be added again."""
    return _change(edition_id, lambda session, edition: editions.drop_article(
        session, edition, article_id, by=caller.actor), "article_id")


@router.patch("/{article_id}", response_model=EditionArticles,
              summary="Move an article in an edition", responses=WRITE_ERRORS)
def move_article(caller: Annotated[Caller, SEND], edition_id: RowId, article_id: RowId,
                 body: NewPosition) -> EditionArticles:
    """To ``position`` in the edition's order; the others keep theirs relative to it."""
    return _change(edition_id, lambda session, edition: editions.move_article(
        session, edition, article_id, body.position - 1, by=caller.actor), "position")
