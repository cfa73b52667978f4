"""``/api/v1/lists``: the lists, read-only (scope ``lists``). Each with its subscriptions
per status; the sign-up and the import name lists by these slugs. Lists are made and
changed by staff (``mailer lists``, the admin's Lists page), not through the API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session

from mailer.api_tokens.service import Caller
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists.models import MailingList, SubscriptionStatus
from mailer.web.api.auth import require
from mailer.web.api.problems import ApiProblem, responses

router = APIRouter(prefix="/lists", tags=["lists"])


class Counts(BaseModel):
    pending: int
    confirmed: int
    unsubscribed: int


class ListOut(BaseModel):
    slug: str
    name: str
    description: str
    #: The id part of the List-Id header its mail carries.
    list_id: str
    #: Offered on the public forms (a private list: staff and import only).
    public: bool
    #: Its sent editions are in the web archive.
    archive: bool
    #: Where a sign-up or an import that names no list goes.
    default: bool
    subscriptions: Counts
    created_at: dt.datetime
    archived_at: dt.datetime | None

    @classmethod
    def of(cls, lst: MailingList, counts: dict[str, int], default_id: int | None) -> ListOut:
        return cls(slug=lst.slug, name=lst.name, description=lst.description,
                   list_id=lst.list_id, public=lst.public, archive=lst.archive,
                   default=lst.id == default_id,
                   subscriptions=Counts(**{s.value: counts.get(s.value, 0)
                                           for s in SubscriptionStatus}),
                   created_at=lst.created_at, archived_at=lst.archived_at)


class ListPage(BaseModel):
    items: list[ListOut]


def _default_id(session: Session) -> int | None:
    try:
        return lists.default_list(session).id
    except lists.ListError:
        return None


@router.get("", response_model=ListPage, summary="The lists",
            responses=responses(400, 401, 403, 422, 429))
def all_lists(caller: Annotated[Caller, Depends(require("lists"))],
              archived: Annotated[bool, Query(description="archived lists too")] = False
              ) -> ListPage:
    """Every open list in the lists' order (with ``archived=true`` the archived ones too),
    with its subscriptions per status."""
    with transaction() as session:
        counts, default_id = lists.subscription_counts(session), _default_id(session)
        return ListPage(items=[ListOut.of(lst, counts.get(lst.id, {}), default_id)
                               for lst in lists.all_lists(session, archived=archived)])


@router.get("/{slug}", response_model=ListOut, summary="One list",
            responses=responses(400, 401, 403, 404, 422, 429))
def one_list(caller: Annotated[Caller, Depends(require("lists"))],
             slug: Annotated[str, Path(max_length=60)]) -> ListOut:
    with transaction() as session:
        lst = lists.by_slug(session, slug.lower())
        if lst is None:
            raise ApiProblem(404, "There is no list with this slug.")
        return ListOut.of(lst, lists.subscription_counts(session).get(lst.id, {}),
                          _default_id(session))
