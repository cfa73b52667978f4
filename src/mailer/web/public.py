"""The reader's pages: subscribe (one list's form, or the combined one with a box per public
list, and their embed snippets), confirm, unsubscribe.

Routes are thin: they read the form, answer bad input with a page that says what is
wrong, and call the subscribers service inside one transaction. Database work runs in
the thread pool (``run_in_threadpool``), never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailer import tasks
from mailer.config import get_settings
from mailer.db import transaction
from mailer.insight.attribution import edition_of_unsubscribe, list_of_unsubscribe
from mailer.lists import service as lists
from mailer.lists.models import MailingList
from mailer.lists.service import names_of
from mailer.ratelimit import hit
from mailer.subscribers import confirmation, signup
from mailer.subscribers import unsubscribe as unsubscribing
from mailer.subscribers.addresses import InvalidAddress, normalise
from mailer.subscribers.queries import status_on
from mailer.tokens import address_hash
from mailer.web.forms import BadForm, Form, client_ip, read_form
from mailer.web.pages import page

router = APIRouter()

FIELDS = ("email", "first_name", "last_name", "organisation", "country")
SOURCES = {"subscribe-page", "website-embed"}
HONEYPOT = "website"
CONSENT_VALUES = ("yes", "on", "true", "1")
#: The combined form's box for a list is ``list-<slug>``; ``lists-offered`` says the form
#: had boxes (so that ticking none is an error, not a sign-up to the default list).
LIST_BOX = "list-"
LISTS_OFFERED = "lists-offered"
NOT_UTF8 = ("This could not be read as text: it was not sent as UTF-8. Please type it "
            "again.")


@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/subscribe", status_code=303)


@router.get("/subscribe", response_class=HTMLResponse)
def subscribe_form() -> HTMLResponse:
    return page("subscribe.html", **_form_context(_public_lists()))


@router.get("/subscribe/embed", response_class=HTMLResponse)
def subscribe_embed() -> HTMLResponse:
    return page("embed.html", limits=signup.FIELD_LIMITS, **_embed_context(_public_lists()))


@router.get("/subscribe/{slug}", response_class=HTMLResponse)
def list_form(slug: str) -> HTMLResponse:
    lst = _public_list(slug)
    if lst is None:
        return _no_such_list()
    return page("subscribe.html", **_form_context([lst], one=lst))


@router.get("/subscribe/{slug}/embed", response_class=HTMLResponse)
def list_embed(slug: str) -> HTMLResponse:
    lst = _public_list(slug)
    if lst is None:
        return _no_such_list()
    return page("embed.html", limits=signup.FIELD_LIMITS, **_embed_context([lst], one=lst))


@router.post("/subscribe", response_class=HTMLResponse)
async def subscribe(request: Request) -> HTMLResponse:
    """The combined form: a box per public list (``list-<slug>``). A form that offers no
    boxes (one public list, or an embed snippet of before) signs up to the first public
    list (the default list)."""
    return await _subscribe(request, None)


@router.post("/subscribe/{slug}", response_class=HTMLResponse)
async def subscribe_to(slug: str, request: Request) -> HTMLResponse:
    """The form of one list; an unknown, archived or private list is a 404."""
    lst = await run_in_threadpool(_public_list, slug)
    if lst is None:
        return _no_such_list()
    return await _subscribe(request, lst)


async def _subscribe(request: Request, one: PublicList | None) -> HTMLResponse:
    offered = [one] if one is not None else await run_in_threadpool(_public_lists)
    context = _form_context(offered, one=one)
    try:
        form = await read_form(request)
    except BadForm:
        return page("subscribe.html", 400, **{**context, "errors": {
            "form": "The form could not be read. Please fill it in again."}})
    if form.get(HONEYPOT):
        return _thanks()  # a bot: answer as if all went well, store nothing
    values = {name: form.get(name).strip() for name in FIELDS}
    source = form.get("source")
    source = source if source in SOURCES else "subscribe-page"
    errors = signup.profile_problems(values)
    try:
        _, key = normalise(values["email"],
                           check_deliverability=get_settings().signup.check_deliverability)
    except InvalidAddress as exc:
        errors["email"] = str(exc)
    for name in form.undecodable & set(FIELDS):
        errors[name] = NOT_UTF8
    chosen = _chosen(form, offered, one)
    if not chosen:
        errors["lists"] = ("Please tick at least one list." if offered else
                           "There is no list to subscribe to at the moment.")
    consented = form.get("consent") in CONSENT_VALUES
    if not consented:
        errors["consent"] = "Please tick the box to confirm that you want the newsletter."
    if errors:
        ticked = {lst.slug for lst in chosen}
        return page("subscribe.html", 422, **{**context, "errors": errors, "source": source,
                                               "values": {**values, "consent": consented},
                                               "ticked": ticked})

    settings = get_settings()
    ip = client_ip(request)
    if not hit(f"signup-ip:{ip}", settings.signup.signup_limit_per_ip_per_hour, 3600):
        return page("rate-limited.html", 429)
    # Over the per-address limit the sign-up is answered, recorded and queued exactly as
    # a first one (status, body and work alike): a 429 here would tell a stranger that
    # this address signed up today. It only sends no second mail.
    may_mail = hit(f"signup-address:{address_hash(key)}",
                   settings.signup.confirmation_mails_per_address_per_day, 86400)
    origin = signup.Origin(source=source, ip=ip, user_agent=request.headers.get("user-agent"))
    await run_in_threadpool(_sign_up, values, origin, may_mail, [lst.id for lst in chosen])
    return _thanks()


@dataclass(frozen=True)
class PublicList:
    """A list as the public forms show it (read in one transaction, used after it)."""

    id: int
    slug: str
    name: str
    description: str
    consent_text: str

    @classmethod
    def of(cls, lst: MailingList) -> PublicList:
        return cls(id=lst.id, slug=lst.slug, name=lst.name, description=lst.description,
                   consent_text=lists.consent_for(lst, get_settings().signup)[1])


def _public_lists() -> list[PublicList]:
    with transaction() as session:
        return [PublicList.of(lst) for lst in lists.public_lists(session)]


def _public_list(slug: str) -> PublicList | None:
    """The open public list of this slug; None for anything else, which is the same 404
    (a private list's form does not exist for the public)."""
    with transaction() as session:
        found = lists.by_slug(session, slug.lower()) if lists.SLUG.match(slug.lower()) else None
        if found is None or not found.public or found.archived_at is not None:
            return None
        return PublicList.of(found)


def _no_such_list() -> HTMLResponse:
    return page("list-missing.html", 404)


def _form_context(offered: list[PublicList], *, one: PublicList | None = None
                  ) -> dict[str, Any]:
    """What subscribe.html needs: the lists offered as boxes (none when there is only one
    to offer), where the form posts, the consent text beside its box."""
    boxes = offered if one is None and len(offered) > 1 else []
    consent = one.consent_text if one is not None else \
        offered[0].consent_text if len(offered) == 1 else get_settings().signup.consent_text
    return {"values": {}, "errors": {}, "limits": signup.FIELD_LIMITS, "one": one,
            "boxes": boxes, "ticked": set(), "consent_text": consent,
            "action": f"/subscribe/{one.slug}" if one is not None else "/subscribe",
            "single": offered[0] if one is None and len(offered) == 1 else None}


def _embed_context(offered: list[PublicList], *, one: PublicList | None = None
                   ) -> dict[str, Any]:
    context = _form_context(offered, one=one)
    return {key: context[key] for key in ("one", "boxes", "consent_text", "action", "single")}


def _chosen(form: Form, offered: list[PublicList], one: PublicList | None
            ) -> list[PublicList]:
    """The lists the form signs up to. A box naming a list that is not offered (private,
    archived, unknown) counts for nothing. A form without boxes (one public list, or a
    snippet of before) signs up to the first public list: the default list, unless that
    one is private."""
    if one is not None:
        return [one]
    ticked = [lst for lst in offered if form.get(LIST_BOX + lst.slug) in CONSENT_VALUES]
    if ticked or form.get(LISTS_OFFERED) == "yes":
        return ticked
    return offered[:1]


def _sign_up(values: dict[str, str], origin: signup.Origin, may_mail: bool,
             list_ids: list[int]) -> None:
    with transaction() as session:
        chosen = [lst for lst in lists.public_lists(session) if lst.id in list_ids]
        if not chosen:  # archived or made private since the form was read
            return
        subscriber = signup.sign_up(
            session,
            email=values["email"],
            profile=signup.Profile(
                first_name=values["first_name"], last_name=values["last_name"],
                organisation=values["organisation"], country=values["country"],
            ),
            origin=origin,
            signup=get_settings().signup,
            lists=chosen,
            may_mail=may_mail,
        )
        # Queued whatever the address's state, so that the answer and its timing are the
        # same for everyone; the worker sends nothing to a confirmed address, nor where
        # no new link was made.
        tasks.publish(tasks.SEND_CONFIRMATION, subscriber.id, session=session)


def _thanks() -> HTMLResponse:
    # One page, with nothing in it that depends on the address: the answer for a new, a
    # pending, a confirmed and an unsubscribed address is the same, byte for byte.
    return page("subscribe-thanks.html")


# --- confirmation -------------------------------------------------------------------------


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(token: str) -> HTMLResponse:
    """Shows a Confirm button and changes nothing: link scanners fetch every URL in a mail."""
    with transaction() as session:
        check = confirmation.check_confirmation(session, token, keys=get_settings().all_secrets)
        names = "" if check.token is None else _names(session, [
            held.list_id for held in confirmation.pending_lists(session, check.token)])
    if check.status != "ok":
        return _token_problem(check.status)
    return page("confirm.html", token=token, list_names=names)


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(token: str, request: Request) -> HTMLResponse:
    with transaction() as session:
        settings = get_settings()
        check = confirmation.confirm(session, token, ip=client_ip(request),
                                     user_agent=request.headers.get("user-agent"),
                                     signup=settings.signup, keys=settings.all_secrets)
        if check.status == "ok":
            assert check.subscriber is not None and check.token is not None
            unsubscribe_url = unsubscribing.unsubscribe_url_for(
                check.subscriber.public_id, base_url=settings.base_url,
                keys=settings.all_secrets,
                list_id=check.token.lists[0] if check.token.lists else None)
            names = _names(session, [
                i for i in check.token.lists or []
                if status_on(session, check.subscriber.id, i) == "confirmed"])
    if check.status != "ok":
        return _token_problem(check.status)
    return page("confirm-done.html", unsubscribe_url=unsubscribe_url, list_names=names)


def _names(session: Session, list_ids: list[int]) -> str:
    """The lists as the pages name them: "CEP Newsletter and CEP Events"."""
    return names_of([lst for i in list_ids if (lst := session.get(MailingList, i))])


def _token_problem(status: str) -> HTMLResponse:
    code = {"invalid": 404, "expired": 410, "used": 410}[status]
    return page("confirm-problem.html", code, status=status)


# --- unsubscribe (RFC 8058) --------------------------------------------------------------------


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, edition: str = "",
                     list_: str = Query("", alias="list")) -> HTMLResponse:
    """Shows an Unsubscribe button and changes nothing (a GET never changes state). The
    button's form keeps the edition the link named (see ``mailer.insight.attribution``)."""
    with transaction() as session:
        subscriber = unsubscribing.subscriber_for_unsubscribe(session, token,
                                                              keys=get_settings().all_secrets)
        if subscriber is None:
            return _not_a_reader(token)
        edition_id = edition_of_unsubscribe(session, subscriber.id, edition)
        lst = list_of_unsubscribe(session, edition_id, list_)
        email = subscriber.email
        status = status_on(session, subscriber.id, lst.id) or "unsubscribed"
        name, list_id = lst.name, lst.id
    edition = str(edition_id) if edition_id is not None else ""
    return page("unsubscribe.html", token=token, email=email, status=status, edition=edition,
                list_name=name, list_id=list_id)


@router.post("/unsubscribe/{token}")
async def unsubscribe(token: str, request: Request) -> Response:
    """The page's button, and RFC 8058 one-click from the mail program: the body
    ``List-Unsubscribe=One-Click`` (form-urlencoded or multipart), no cookies, no login.
    Either way the answer is a 2xx without a redirect; a bad token is a 404 that changes
    nothing; a repeat changes nothing and answers the same."""
    try:
        form = (await read_form(request)).values
    except BadForm:
        form = {}
    one_click = form.get("List-Unsubscribe") == "One-Click"
    found = await run_in_threadpool(
        _unsubscribe, token, channel="one-click" if one_click else "link",
        ip=client_ip(request), user_agent=request.headers.get("user-agent"),
        edition=request.query_params.get("edition"),
        list_=request.query_params.get("list"),
        # RFC 8058 one-click ends the list the message came from; the page's second
        # button ends every list.
        everything=not one_click and form.get("scope") == "all",
    )
    if found is None:
        if one_click and unsubscribing.edition_of_test_copy(
                token, keys=get_settings().all_secrets) is not None:
            return PlainTextResponse("This was a test copy: nobody was unsubscribed.\n")
        if one_click:
            return PlainTextResponse("Unknown unsubscribe link.\n", status_code=404)
        return _not_a_reader(token)
    if one_click:
        # A 2xx, no redirect, nothing the mail program has to render.
        return PlainTextResponse("You are unsubscribed.\n", status_code=200)
    return page("unsubscribe-done.html", resubscribe_url="/subscribe", list_name=found)


def _not_a_reader(token: str) -> HTMLResponse:
    """A link that unsubscribes nobody: from a test copy (signed by us, naming the edition)
    it says so; anything else is not valid."""
    edition_id = unsubscribing.edition_of_test_copy(token, keys=get_settings().all_secrets)
    if edition_id is None:
        return page("unsubscribe-invalid.html", 404)
    return page("unsubscribe-test-copy.html")


def _unsubscribe(token: str, *, channel: str, ip: str, user_agent: str | None,
                 edition: str | None, list_: str | None, everything: bool) -> str | None:
    """The name of the list left ("" for every list); None when the link names nobody."""
    with transaction() as session:
        subscriber = unsubscribing.subscriber_for_unsubscribe(session, token,
                                                              keys=get_settings().all_secrets)
        if subscriber is None:
            return None
        edition_id = edition_of_unsubscribe(session, subscriber.id, edition)
        lst = list_of_unsubscribe(session, edition_id, list_)
        unsubscribing.unsubscribe(
            session, subscriber, list_id=None if everything else lst.id, channel=channel,
            ip=ip, user_agent=user_agent, edition_id=edition_id)
        return "" if everything else lst.name
