"""``/api/v1/bounces``: what came back, a page at a time (keyset, as the subscriber search).

Each bounce as the admin's Bounces page shows it (class, recipient, status, the server's
diagnostic, how it was tied to a message we sent, its trust, what was done) but without
the raw message: an excerpt of a mail that came back, or of one anybody wrote to the
return path, may quote other people's messages and addresses; it stays in the admin.
Subscribers are named by their public id.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from mailer.api_tokens.service import Caller
from mailer.bounces import queries
from mailer.bounces.models import BounceClass, Trust
from mailer.db import transaction
from mailer.web.api.auth import require
from mailer.web.api.problems import responses

router = APIRouter(prefix="/bounces", tags=["bounces"])

TrustName = Literal["verified", "unverified", "confirmed", "none"]
_TRUST_NAMES: dict[Trust, TrustName] = {Trust.verified: "verified",
                                        Trust.unverified: "unverified",
                                        Trust.confirmed: "confirmed", Trust.none: "none"}


class BounceOut(BaseModel):
    id: int
    received_at: dt.datetime
    #: How it arrived: smtp (our own transaction), mail, a provider's webhook, import.
    source: str
    bounce_class: BounceClass
    recipient: str
    status_code: str
    #: The receiving server's own words.
    diagnostic: str
    remote_mta: str
    edition_id: int | None
    #: The subscriber it acted on (public id), if it was tied to one.
    subscriber: str | None
    #: How it was tied to a delivery: verp, message-id, recipient or none.
    attribution: str
    #: verified, unverified (acted on nobody), confirmed by hand, or none.
    trust: TrustName
    unverified_reason: str
    #: The subscriber an unverified bounce names (never acted on unless confirmed).
    claimed_subscriber: str | None
    #: What was done: suppressed, counted, unsubscribed, alerted, nothing.
    action: str
    #: A hard bounce's evidence: strong, weak, or "".
    evidence: str
    confirmed_by: str | None
    confirmed_at: dt.datetime | None


class BouncePage(BaseModel):
    items: list[BounceOut]
    #: Pass as ``after`` for the next page; null on the last one.
    next: str | None


class Listing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bounce_class: BounceClass | None = Field(None, alias="class")
    trust: TrustName | None = None
    after: str | None = Field(None, max_length=20, pattern=r"^[0-9]{1,18}$",
                              description="`next` of the page before, or the last id seen")
    limit: int = Field(50, ge=1, le=200)


@router.get("", response_model=BouncePage, summary="Bounces and complaints",
            responses=responses(400, 401, 403, 422, 429))
def list_bounces(caller: Annotated[Caller, Depends(require("bounces:read"))],
                 params: Annotated[Listing, Query()]) -> BouncePage:
    """In the order they came, a page at a time; of one ``class`` and one ``trust`` if
    given. To poll for new ones, keep the last ``id`` seen and pass it as ``after``."""
    trust = None if params.trust is None else next(
        t for t, name in _TRUST_NAMES.items() if name == params.trust)
    with transaction() as session:
        rows = queries.page(session, after_id=int(params.after) if params.after else 0,
                            limit=params.limit + 1, bounce_class=params.bounce_class,
                            trust=trust)
        items = [_out(row) for row in rows[:params.limit]]
    more = str(items[-1].id) if len(rows) > params.limit else None
    return BouncePage(items=items, next=more)


def _out(row: queries.BounceRow) -> BounceOut:
    b = row.bounce
    return BounceOut(
        id=b.id, received_at=b.received_at, source=b.source,
        bounce_class=BounceClass(b.bounce_class), recipient=b.recipient,
        status_code=b.status_code, diagnostic=b.diagnostic, remote_mta=b.remote_mta,
        edition_id=b.edition_id, subscriber=row.subscriber, attribution=b.attribution,
        trust=_TRUST_NAMES[Trust(b.trust)], unverified_reason=b.unverified_reason,
        claimed_subscriber=row.claimed_subscriber, action=b.action, evidence=b.evidence,
        confirmed_by=b.confirmed_by, confirmed_at=b.confirmed_at)
