"""``/api/v1/suppressions``: the addresses never mailed, listed, added and lifted.

Entries are named by the address's hash (the list holds no address); an addition or a
lifting is audited as ``api:<token name>`` by the suppression service. An erasure's entry
cannot be lifted: it is what keeps an erased person from being imported and mailed again.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from mailer.api_tokens.service import Caller
from mailer.db import transaction
from mailer.subscribers.addresses import InvalidAddress, key_hash
from mailer.subscribers.models import SuppressionReason
from mailer.suppression import queries
from mailer.suppression import service as suppression_service
from mailer.web.api.auth import require
from mailer.web.api.problems import ApiProblem, field_errors, responses
from mailer.web.api.subscribers import TEXT

router = APIRouter(prefix="/suppressions", tags=["suppressions"])

HASH = r"^[0-9a-f]{64}$"


class SuppressionOut(BaseModel):
    address_hash: str
    reason: SuppressionReason
    created_at: dt.datetime
    created_by: str
    #: The subscriber who still has the address, if any.
    subscriber_email: str | None


class SuppressionList(BaseModel):
    items: list[SuppressionOut]


class Listing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: SuppressionReason | None = None
    limit: int = Field(100, ge=1, le=1000)


class NewSuppression(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    evidence: str = Field("", max_length=1000, pattern=TEXT,
                          description="why (kept with the entry)")


class Added(BaseModel):
    address_hash: str
    #: False when the address was on the list already.
    added: bool


@router.get("", response_model=SuppressionList, summary="The suppression list",
            responses=responses(400, 401, 403, 422, 429))
def list_suppressions(caller: Annotated[Caller, Depends(require("suppressions"))],
                      params: Annotated[Listing, Query()]) -> SuppressionList:
    """Newest first."""
    with transaction() as session:
        rows = queries.suppressions(session, reason=params.reason, limit=params.limit)
        return SuppressionList(items=[
            SuppressionOut(address_hash=r.suppression.address_hash,
                           reason=SuppressionReason(r.suppression.reason),
                           created_at=r.suppression.created_at,
                           created_by=r.suppression.created_by, subscriber_email=r.email)
            for r in rows])


@router.post("", status_code=201, response_model=Added, summary="Suppress an address",
             responses=responses(400, 401, 403, 422, 429))
def add(caller: Annotated[Caller, Depends(require("suppressions"))],
        body: NewSuppression) -> Added:
    try:
        hash_ = key_hash(body.email)
    except InvalidAddress as exc:
        raise ApiProblem(422, "The address is wrong.",
                         errors=field_errors(email=str(exc))) from None
    with transaction() as session:
        added = suppression_service.suppress(
            session, hash_, reason=SuppressionReason.manual,
            evidence=body.evidence.strip() or f"added by {caller.actor}", by=caller.actor)
    return Added(address_hash=hash_, added=added)


@router.delete("/{address_hash}", status_code=204, summary="Lift a suppression",
               responses=responses(400, 401, 403, 404, 409, 422, 429))
def remove(caller: Annotated[Caller, Depends(require("suppressions"))],
           address_hash: Annotated[str, Path(pattern=HASH)]) -> Response:
    """The address gets newsletters again only as a confirmed subscriber."""
    with transaction() as session:
        row = queries.suppression_of(session, address_hash)
        if row is None:
            raise ApiProblem(404, "That address is not on the suppression list.")
        try:
            suppression_service.unsuppress(session, address_hash, by=caller.actor)
        except suppression_service.ErasureKept as exc:
            raise ApiProblem(409, str(exc)) from None
    return Response(status_code=204)
