"""``/api/v1/subscribers``: search, read, and sign up.

A sign-up here is the form's sign-up (issue 13: "our API keeps every rule the form
keeps"): the same service, double opt-in (a pending subscriber and a confirmation mail,
never a confirmed one), the consent text and version recorded with the source
``api:<token name>``, at most one confirmation mail per address a day, and the form's
per-IP limit counted per token. The answer is the same whatever the address's state, as
the form's is. Every sign-up is in the audit log as ``api:<token name>``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import privacy, tasks
from mailer.api_tokens.service import Caller
from mailer.config import get_settings
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists.models import MailingList, Subscription
from mailer.ratelimit import hit
from mailer.subscribers import importer, profile, queries, signup
from mailer.subscribers import unsubscribe as unsubscribing
from mailer.subscribers.addresses import InvalidAddress, normalise
from mailer.subscribers.models import Subscriber
from mailer.tokens import address_hash
from mailer.web.api.auth import require
from mailer.web.api.problems import ApiProblem, field_errors, responses
from mailer.web.forms import client_ip

router = APIRouter(prefix="/subscribers", tags=["subscribers"])

Status = Literal["pending", "confirmed", "unsubscribed"]
LIMITS = signup.FIELD_LIMITS
#: No line break, tab or other control character (the form refuses them too).
TEXT = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
SLUG = r"^[a-z0-9][a-z0-9-]{0,59}$"


class SubscriptionOut(BaseModel):
    """The person on one list."""

    #: The list's slug.
    list_slug: str = Field(serialization_alias="list")
    status: Status
    #: The topic ids they follow on the list; null: all of them, new ones included.
    topics: list[int] | None
    created_at: dt.datetime
    confirmed_at: dt.datetime | None
    unsubscribed_at: dt.datetime | None


class SubscriberOut(BaseModel):
    public_id: str
    email: str
    first_name: str
    last_name: str
    organisation: str
    country: str
    #: Over all lists: confirmed on one at least, else pending on one, else unsubscribed
    #: (each list's own is in ``subscriptions``).
    status: Status
    source: str
    created_at: dt.datetime
    #: The latest confirmation on any list.
    confirmed_at: dt.datetime | None
    #: The latest unsubscribe, when the person is on no list any more.
    unsubscribed_at: dt.datetime | None
    subscriptions: list[SubscriptionOut]

    @classmethod
    def of(cls, s: Subscriber, held: Sequence[tuple[Subscription, str]]) -> SubscriberOut:
        statuses = {h.status for h, _ in held}
        status = next((x for x in ("confirmed", "pending") if x in statuses), "unsubscribed")
        confirmed = [h.confirmed_at for h, _ in held if h.confirmed_at]
        left = [h.unsubscribed_at for h, _ in held if h.unsubscribed_at]
        return cls(public_id=s.public_id, email=s.email, first_name=s.first_name,
                   last_name=s.last_name, organisation=s.organisation, country=s.country,
                   status=cast(Status, status), source=s.source, created_at=s.created_at,
                   confirmed_at=max(confirmed, default=None),
                   unsubscribed_at=max(left, default=None) if status == "unsubscribed"
                   else None,
                   subscriptions=[SubscriptionOut(
                       list_slug=slug, status=cast(Status, h.status), topics=h.topics,
                       created_at=h.created_at, confirmed_at=h.confirmed_at,
                       unsubscribed_at=h.unsubscribed_at)
                       for h, slug in held])


def _outs(session: Session, found: Sequence[Subscriber]) -> list[SubscriberOut]:
    """The subscribers as the API shows them, their subscriptions read in one query."""
    held: dict[int, list[tuple[Subscription, str]]] = {s.id: [] for s in found}
    if found:
        for h, slug in session.execute(
                select(Subscription, MailingList.slug)
                .join(MailingList, MailingList.id == Subscription.list_id)
                .where(Subscription.subscriber_id.in_(list(held)))
                .order_by(MailingList.position, MailingList.id)):
            held[h.subscriber_id].append((h, slug))
    return [SubscriberOut.of(s, held[s.id]) for s in found]


class SubscriberPage(BaseModel):
    items: list[SubscriberOut]
    #: Pass as ``after`` for the next page; null on the last one.
    next: str | None


class SignUp(BaseModel):
    """A person who asked for the newsletter on another system's form."""

    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=LIMITS["email"], min_length=3, pattern=r"^[^@\s]+@[^@\s]+$",
                       json_schema_extra={"format": "email"},
                       description="checked and normalised as the form does it")
    first_name: str = Field("", max_length=LIMITS["first_name"], pattern=TEXT)
    last_name: str = Field("", max_length=LIMITS["last_name"], pattern=TEXT)
    organisation: str = Field("", max_length=LIMITS["organisation"], pattern=TEXT)
    country: str = Field("", max_length=LIMITS["country"], pattern=TEXT)
    #: The person ticked a box beside the association's consent text (MAILER_CONSENT_TEXT).
    consent: Literal[True] = Field(description="the person agreed to the consent text")
    #: The person's IP address and browser, if the other system has them (kept as the
    #: form keeps them); otherwise the caller's own.
    ip: str | None = Field(None, max_length=45, pattern=r"^[0-9A-Fa-f:.]+$")
    user_agent: str | None = Field(None, max_length=500, pattern=TEXT)
    #: The lists (slugs) asked for; the first list when left out. Private lists too: the
    #: caller is staff's own system.
    lists: list[Annotated[str, Field(max_length=60, pattern=SLUG)]] | None = Field(
        None, min_length=1, max_length=50)


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    detail: str = ("Unless the address is subscribed already, a confirmation mail is on its "
                   "way; the person is subscribed once they press its Confirm button.")


class Search(BaseModel):
    """The search's query string; a parameter it does not know is a 422, not ignored (a
    misspelt ``?emial=`` would otherwise list everybody)."""

    model_config = ConfigDict(extra="forbid")
    email: str = Field("", max_length=320, pattern=TEXT,
                       description="a part of the address, in any case")
    #: Without ``list``: the status over all lists (the item's ``status``); with it, on it.
    status: Status | None = None
    list_slug: str | None = Field(None, alias="list", max_length=60, pattern=SLUG,
                                  description="only people on this list (its slug)")
    after: str | None = Field(None, max_length=20, pattern=r"^[0-9]{1,18}$",
                              description="`next` of the page before")
    limit: int = Field(50, ge=1, le=200)


@router.get("", response_model=SubscriberPage, summary="Search subscribers",
            responses=responses(400, 401, 403, 404, 422, 429))
def search(caller: Annotated[Caller, Depends(require("subscribers:read"))],
           params: Annotated[Search, Query()]) -> SubscriberPage:
    """Subscribers in the order they came, a page at a time (keyset pagination)."""
    with transaction() as session:
        list_id = _lists(session, [params.list_slug])[0].id if params.list_slug else None
        found = queries.search(session, email=params.email.strip(), status=params.status,
                               list_id=list_id,
                               after_id=int(params.after) if params.after else 0,
                               limit=params.limit + 1)
        page = _outs(session, found[:params.limit])
        more = str(found[params.limit - 1].id) if len(found) > params.limit else None
    return SubscriberPage(items=page, next=more)


@router.get("/{public_id}", response_model=SubscriberOut, summary="One subscriber",
            responses=responses(400, 401, 403, 404, 422, 429))
def get_one(caller: Annotated[Caller, Depends(require("subscribers:read"))],
            public_id: Annotated[str, Path(max_length=64)]) -> SubscriberOut:
    with transaction() as session:
        return _outs(session, [_find(session, public_id)])[0]


@router.post("", status_code=202, response_model=Accepted, summary="Sign a person up",
             responses=responses(400, 401, 403, 404, 422, 429))
def sign_up(caller: Annotated[Caller, Depends(require("subscribers:write"))],
            body: SignUp, request: Request) -> Accepted:
    """Sign a person up with double opt-in, as the form does."""
    values = {name: getattr(body, name).strip() for name in LIMITS}
    problems = signup.profile_problems(values)
    try:
        _, key = normalise(values["email"],
                           check_deliverability=get_settings().signup.check_deliverability)
    except InvalidAddress as exc:
        problems["email"] = str(exc)
    if problems:
        raise ApiProblem(422, "The sign-up has fields that are wrong.",
                         errors=field_errors(**problems))
    settings = get_settings()
    limit = settings.signup.signup_limit_per_ip_per_hour
    if not hit(f"signup-token:{caller.token_id}", limit, 3600):
        raise ApiProblem(429, f"More than {limit} sign-ups in "
                         "an hour with this token.", headers={"Retry-After": "3600"})
    may_mail = hit(f"signup-address:{address_hash(key)}",
                   settings.signup.confirmation_mails_per_address_per_day, 86400)
    origin = signup.Origin(source=caller.actor, ip=body.ip or client_ip(request),
                           user_agent=body.user_agent or request.headers.get("user-agent"))
    with transaction() as session:
        subscriber = signup.sign_up(
            session, email=values["email"], origin=origin, signup=settings.signup,
            may_mail=may_mail, by=caller.actor, lists=_lists(session, body.lists),
            profile=signup.Profile(first_name=values["first_name"],
                                   last_name=values["last_name"],
                                   organisation=values["organisation"],
                                   country=values["country"]))
        tasks.publish(tasks.SEND_CONFIRMATION, subscriber.id, session=session)
    return Accepted()


class ImportItem(BaseModel):
    """One reader, with the CSV import's columns."""

    model_config = ConfigDict(extra="forbid")
    #: Checked per item, as the CSV's rows are: a wrong address is that item's result
    #: (``invalid``), not the whole request's 422.
    email: str = Field(max_length=LIMITS["email"], pattern=TEXT)
    first_name: str = Field("", max_length=LIMITS["first_name"], pattern=TEXT)
    last_name: str = Field("", max_length=LIMITS["last_name"], pattern=TEXT)
    organisation: str = Field("", max_length=LIMITS["organisation"], pattern=TEXT)
    country: str = Field("", max_length=LIMITS["country"], pattern=TEXT)
    consented_at: str | None = Field(None, max_length=40, pattern=TEXT,
                                     description="when they agreed: 2024-03-01 or "
                                                 "2024-03-01T09:30:00")


class Import(BaseModel):
    """Readers who agreed elsewhere (a paper list, the old system, an event's form), and
    where and to what they agreed: recorded in each one's consent history."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=100, pattern=TEXT,
                        description="where the consent was given, e.g. `members 2025 form`")
    consent_version: str = Field("imported", min_length=1, max_length=32, pattern=TEXT,
                                 description="the version of the text they agreed to")
    consent_text: str | None = Field(None, max_length=4000,
                                     description="the text they agreed to")
    evidence: str | None = Field(None, max_length=1000, pattern=TEXT,
                                 description="where the proof of consent is kept")
    items: list[ImportItem] = Field(min_length=1, max_length=importer.CHUNK)
    #: The list (slug) they join; the first list when left out.
    list_slug: str | None = Field(None, alias="list", max_length=60, pattern=SLUG)


class ImportResult(BaseModel):
    #: The item's place in ``items``, from 0.
    index: int
    email: str
    result: Literal["imported", "invalid", "duplicate", "suppressed", "exists"]
    #: The new subscriber's id, when imported.
    public_id: str | None = None
    #: Why it was not imported, in words.
    detail: str | None = None


class ImportReport(BaseModel):
    imported: int
    skipped: int
    items: list[ImportResult]


@router.post("/import", response_model=ImportReport,
             summary="Import confirmed readers with their consent's origin",
             responses=responses(400, 401, 403, 404, 422, 429))
def import_confirmed(caller: Annotated[Caller, Depends(require("subscribers:import"))],
                     body: Import) -> ImportReport:
    """As ``mailer subscribers import`` does it: each reader confirmed at once (no mail),
    with a consent event ``imported`` naming the source, the consent version and text, the
    evidence and the token. An address on the suppression list is not imported (result
    ``suppressed``), an existing subscriber is left as they are (``exists``, even one who
    unsubscribed). At most 500 items a request; audited as ``subscribers.import``."""
    rows = [importer.Row(i + 1, {k: v.strip() for k, v in item.model_dump(
        exclude_none=True).items()}) for i, item in enumerate(body.items)]
    with transaction() as session:
        list_id = _lists(session, [body.list_slug] if body.list_slug else None)[0].id
    report = importer.import_rows(  # its own transaction, audited there
        rows, source=body.source.strip(), by=caller.actor, name=caller.actor, list_id=list_id,
        check_deliverability=get_settings().signup.check_deliverability,
        consent=importer.Consent(version=body.consent_version.strip(),
                                 text=body.consent_text, evidence=body.evidence))
    words = dict(report.problems)
    results = []
    for row, item in zip(rows, body.items, strict=True):
        added = report.added.get(row.line)
        results.append(ImportResult(
            index=row.line - 1, email=item.email,
            result="imported" if added else report.skips[row.line].value,
            public_id=added, detail=None if added else words[row.line]))
    return ImportReport(imported=report.imported, skipped=report.skipped, items=results)


class Done(BaseModel):
    """What a change did: ``changed`` is false when there was nothing to change."""

    changed: bool


def _lists(session: Session, slugs: Sequence[str] | None) -> list[MailingList]:
    """The open lists named (the first list for none); a 404 names one that is not (a list
    that does not exist is a resource not found, as an unknown subscriber is)."""
    if not slugs:
        return [lists.default_list(session)]
    try:
        return lists.lists_named(session, list(dict.fromkeys(slugs)))
    except lists.ListError as exc:
        raise ApiProblem(404, str(exc)) from None


def _find(session: Session, public_id: str) -> Subscriber:
    found = queries.by_public_id(session, public_id)
    if found is None:
        raise ApiProblem(404, "There is no subscriber with this id.")
    return found


class ProfileChange(BaseModel):
    """The name fields to change; those left out stay as they are. The address is not one
    of them: a new address is signed up (``POST /subscribers``) and confirmed from its own
    inbox, and the old one unsubscribed or erased."""

    model_config = ConfigDict(extra="forbid")
    first_name: str | None = Field(None, max_length=LIMITS["first_name"], pattern=TEXT)
    last_name: str | None = Field(None, max_length=LIMITS["last_name"], pattern=TEXT)
    organisation: str | None = Field(None, max_length=LIMITS["organisation"], pattern=TEXT)
    country: str | None = Field(None, max_length=LIMITS["country"], pattern=TEXT)


class Changed(BaseModel):
    subscriber: SubscriberOut
    #: The fields whose value changed (empty: nothing did).
    changed: list[str]


@router.patch("/{public_id}", response_model=Changed, summary="Change the name fields",
              responses=responses(400, 401, 403, 404, 422, 429))
def change(caller: Annotated[Caller, Depends(require("subscribers:write"))],
           public_id: Annotated[str, Path(max_length=64)], body: ProfileChange) -> Changed:
    """First name, last name, organisation, country, checked as the form checks them. An
    ``email`` is refused (422): a new address goes through double opt-in, as a sign-up."""
    values = {k: v.strip() for k, v in body.model_dump(exclude_none=True).items()}
    with transaction() as session:
        subscriber = _find(session, public_id)
        try:
            changed = profile.update_profile(session, subscriber, values,
                                             by=caller.actor)  # audited there
        except profile.ProfileError as exc:
            raise ApiProblem(422, "The change has fields that are wrong.",
                             errors=field_errors(**exc.problems)) from None
        return Changed(subscriber=_outs(session, [subscriber])[0], changed=changed)


@router.post("/{public_id}/unsubscribe", response_model=Done, summary="Unsubscribe",
             responses=responses(400, 401, 403, 404, 422, 429))
def unsubscribe_one(caller: Annotated[Caller, Depends(require("subscribers:write"))],
                    public_id: Annotated[str, Path(max_length=64)],
                    list_slug: Annotated[str | None, Query(alias="list", max_length=60,
                                                           pattern=SLUG)] = None) -> Done:
    """Unsubscribe the person from the list ``?list=`` names, or from every list
    (recorded in their consent history with the channel ``api``); unsubscribing again
    changes nothing."""
    with transaction() as session:
        subscriber = _find(session, public_id)
        list_id = _lists(session, [list_slug])[0].id if list_slug else None
        changed = unsubscribing.unsubscribe(session, subscriber, list_id=list_id,
                                            channel="api", by=caller.actor)  # audited there
    return Done(changed=changed)


@router.get("/{public_id}/export", summary="The person's data (GDPR Art. 15)",
            responses=responses(400, 401, 403, 404, 422, 429))
def export_one(caller: Annotated[Caller, Depends(require("subscribers:read"))],
               public_id: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
    """Everything held about the person, as the admin's export builds it: the
    subscriber, the whole consent history, every edition sent to them."""
    with transaction() as session:
        subscriber = _find(session, public_id)
        data = privacy.export(session, subscriber, by=caller.actor)  # audited there
    return data


@router.delete("/{public_id}", status_code=204, summary="Erase (GDPR Art. 17)",
               responses=responses(400, 401, 403, 404, 422, 429))
def erase_one(caller: Annotated[Caller, Depends(require("subscribers:write"))],
              public_id: Annotated[str, Path(max_length=64)]) -> Response:
    """Delete everything about the person but a hashed suppression entry, which keeps
    them from being imported and mailed again."""
    with transaction() as session:
        privacy.erase(session, _find(session, public_id), by=caller.actor)  # audited there
    return Response(status_code=204)
