"""The reader's preference page: ``/preferences/<token>`` and its confirmation links.

Thin, as the other public pages are: read the form, check its CSRF token, call one
``mailer.preferences.service`` function in one transaction, word the answer (``_change``
does the first steps for every form of the page). The page lists the reader's lists and
the public ones they could join; per list, a box per topic, and a button to leave it. A forged,
altered or unknown token is a 404 before anything else is read, and changes nothing.

CSRF: the page sets a random nonce in a cookie (``SameSite=Lax``, HTTP only, on
``/preferences`` alone) and every form on it carries an HMAC of that nonce and the page's
token, as the admin's login form does; a post without both is a 403 that changes nothing.
The link itself is the reader's secret; the nonce keeps another site from posting the
page's forms from a browser that opened it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailer.config import get_settings
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.preferences import service
from mailer.subscribers.models import Subscriber
from mailer.subscribers.profile import ProfileError
from mailer.subscribers.signup import FIELD_LIMITS
from mailer.subscribers.unsubscribe import subscriber_for_preferences
from mailer.tokens import sign, verify
from mailer.web.bounds import id_or_none
from mailer.web.forms import BadForm, Form, client_ip, read_form
from mailer.web.pages import page
from mailer.web.public import NOT_UTF8

router = APIRouter()

COOKIE = "mailer_preferences"
_FORM_PURPOSE = "preferences-form"
#: A topic's box on the page is ``topic-<its id>``.
TOPIC_FIELD = "topic-"
EXPIRED_FORM = "This form has expired. Please open the page again from the link in your mail."


# --- the page ---------------------------------------------------------------------------------


@router.get("/preferences/confirm/{token}", response_class=HTMLResponse)
def confirmation_page(token: str, request: Request) -> HTMLResponse:
    """The mailed link: a button, and nothing changes (mail scanners open every link)."""
    with transaction() as session:
        check = service.check_confirmation(session, token, keys=get_settings().all_secrets)
        email = check.subscriber.email if check.subscriber else ""
    if check.status != "ok":
        return _link_problem(check.status)
    return _with_form(request, token, "preferences-confirm.html", action=check.action,
                      email=email)


@router.post("/preferences/confirm/{token}", response_class=HTMLResponse)
async def confirm(token: str, request: Request) -> HTMLResponse:
    form = await _read(request)
    origin = _origin(request)

    def run() -> tuple[str, str | None, str]:
        with transaction() as session:
            check = service.check_confirmation(session, token, keys=get_settings().all_secrets)
            if check.status != "ok" or not _form_ok(request, form, token):
                return check.status if check.status != "ok" else "no-csrf", None, ""
            email = check.subscriber.email if check.subscriber else ""
            service.confirm(session, token, origin=origin, keys=get_settings().all_secrets)
            return "ok", check.action, email

    status, action, email = await run_in_threadpool(run)
    if status == "no-csrf":
        return _expired_form(f"/preferences/confirm/{token}")
    if status != "ok":
        return _link_problem(status)
    return page("preferences-done.html", action=action, email=email)


@router.get("/preferences/{token}", response_class=HTMLResponse)
def preferences_page(token: str, request: Request) -> HTMLResponse:
    with transaction() as session:
        subscriber = subscriber_for_preferences(session, token, keys=get_settings().all_secrets)
        if subscriber is None:
            return _link_problem("invalid")
        return _page(request, token, session, subscriber)


@router.post("/preferences/{token}/name", response_class=HTMLResponse)
async def change_name(token: str, request: Request) -> HTMLResponse:
    def act(session: Session, subscriber: Subscriber, form: Form,
            origin: service.Origin) -> HTMLResponse:
        values = {name: form.get(name) for name in service.NAME_FIELDS}
        errors = {name: NOT_UTF8 for name in form.undecodable & set(service.NAME_FIELDS)}
        if not errors:
            try:
                changed = service.change_name(session, subscriber, origin=origin, **values)
            except ProfileError as exc:
                errors = exc.problems
            else:
                notice = "Your name is saved." if changed else "Nothing was changed."
                return _page(request, token, session, subscriber, notice=notice)
        return _page(request, token, session, subscriber, status_code=422, errors=errors,
                     values=values)

    return await _change(request, token, act)


@router.post("/preferences/{token}/topics", response_class=HTMLResponse)
async def change_topics(token: str, request: Request) -> HTMLResponse:
    """One list's topics: a box per topic (``topic-<id>``), every box ticked = all."""
    def act(session: Session, subscriber: Subscriber, form: Form,
            origin: service.Origin) -> HTMLResponse:
        list_id = id_or_none(form.get("list"))
        chosen = [topic_id for name, value in form.values.items()
                  if name.startswith(TOPIC_FIELD) and value
                  and (topic_id := id_or_none(name[len(TOPIC_FIELD):])) is not None]
        try:
            if list_id is None:
                raise service.PreferenceError("That is not one of your lists.")
            changed = service.change_topics(session, subscriber, list_id, chosen,
                                            origin=origin)
        except service.PreferenceError as exc:
            return _page(request, token, session, subscriber, status_code=422,
                         list_errors={list_id or 0: str(exc)})
        name = _list_name(session, list_id)
        return _page(request, token, session, subscriber,
                     notice=f"Your topics for {name} are saved." if changed
                     else "Nothing was changed.")

    return await _change(request, token, act)


@router.post("/preferences/{token}/join", response_class=HTMLResponse)
async def join(token: str, request: Request) -> HTMLResponse:
    """A public list: a pending subscription, and its confirmation link by mail."""
    def act(session: Session, subscriber: Subscriber, form: Form,
            origin: service.Origin) -> HTMLResponse:
        list_id = id_or_none(form.get("list"))
        if list_id is None:
            return _page(request, token, session, subscriber, status_code=422,
                         list_errors={0: "That is not a list you can join."})
        try:
            lst = service.join(session, subscriber, list_id, origin=origin,
                               signup=get_settings().signup)
        except service.Limited:
            return page("rate-limited.html", 429)
        except service.PreferenceError as exc:
            return _page(request, token, session, subscriber, status_code=422,
                         list_errors={list_id: str(exc)})
        return _page(request, token, session, subscriber,
                     notice=f"Nearly done: we mail a link to {subscriber.email}. Click it "
                            f"to confirm that you want {lst.name}.")

    return await _change(request, token, act)


@router.post("/preferences/{token}/leave", response_class=HTMLResponse)
async def leave(token: str, request: Request) -> HTMLResponse:
    """One list (``list``), or everything (no ``list``)."""
    def act(session: Session, subscriber: Subscriber, form: Form,
            origin: service.Origin) -> HTMLResponse:
        raw = form.get("list")
        list_id = id_or_none(raw) if raw else None
        if raw and list_id is None:
            return _page(request, token, session, subscriber, status_code=422,
                         list_errors={0: "That is not one of your lists."})
        service.leave(session, subscriber, origin=origin, list_id=list_id)
        notice = ("You are unsubscribed: no more newsletters to this address."
                  if list_id is None else
                  f"You have left {_list_name(session, list_id)}: no more of its mail.")
        return _page(request, token, session, subscriber, notice=notice)

    return await _change(request, token, act)


@router.post("/preferences/{token}/{action}", response_class=HTMLResponse)
async def ask(token: str, action: str, request: Request) -> HTMLResponse:
    """Download my data, or erase me: a confirmation link goes to the address."""
    if action not in service.ACTIONS:
        return _link_problem("invalid")

    def act(session: Session, subscriber: Subscriber, form: Form,
            origin: service.Origin) -> HTMLResponse:
        if not service.request(session, subscriber, action,  # type: ignore[arg-type]
                               origin=origin, signup=get_settings().signup):
            return page("preferences-limited.html", 429, action=action,
                        back=f"/preferences/{token}")
        return page("preferences-asked.html", action=action, email=subscriber.email,
                    back=f"/preferences/{token}", valid_days=service.REQUEST_TTL.days)

    return await _change(request, token, act)


# --- helpers --------------------------------------------------------------------------------------


Act = Callable[[Session, Subscriber, Form, service.Origin], HTMLResponse]


async def _change(request: Request, token: str, act: Act) -> HTMLResponse:
    """What every form of the page does first: read the form, find the reader of the
    link (404 when it is not one of ours), check the CSRF token (403), then ``act`` in one
    transaction, in a thread."""
    form = await _read(request)
    origin = _origin(request)

    def run() -> HTMLResponse:
        with transaction() as session:
            subscriber = subscriber_for_preferences(session, token, keys=get_settings().all_secrets)
            if subscriber is None:
                return _link_problem("invalid")
            if not _form_ok(request, form, token):
                return _expired_form(f"/preferences/{token}")
            return act(session, subscriber, form, origin)

    return await run_in_threadpool(run)


def _page(request: Request, token: str, session: Session, subscriber: Subscriber, *,
          status_code: int = 200, notice: str = "", errors: dict[str, str] | None = None,
          values: dict[str, str] | None = None,
          list_errors: dict[int, str] | None = None) -> HTMLResponse:
    shown = values or {name: getattr(subscriber, name) or "" for name in service.NAME_FIELDS}
    choices = service.lists_of(session, subscriber,
                               unfiled=get_settings().articles.unfiled_categories)
    on_page = {c.mailing_list.id for c in choices}
    # A problem with a list the page does not show is said at the top.
    list_errors = {(k if k in on_page else 0): v for k, v in (list_errors or {}).items()}
    return _with_form(request, token, "preferences.html", status_code,
                      email=subscriber.email, lists=choices,
                      on_any=any(c.on_it for c in choices), values=shown,
                      errors=errors or {}, notice=notice, limits=FIELD_LIMITS,
                      list_errors=list_errors, topic_field=TOPIC_FIELD)


def _list_name(session: Session, list_id: int) -> str:
    lst = lists.find(session, list_id)
    return lst.name if lst is not None else "the list"


def _with_form(request: Request, token: str, template: str, status_code: int = 200,
               **context: object) -> HTMLResponse:
    """A page for ``token`` whose forms carry the CSRF token bound to the browser's nonce
    cookie."""
    nonce = request.cookies.get(COOKIE, "")
    fresh = not (16 <= len(nonce) <= 64 and nonce.isascii() and nonce.isalnum())
    if fresh:
        nonce = secrets.token_hex(16)
    response = page(template, status_code, token=token,
                    csrf=sign(_FORM_PURPOSE, f"{nonce}:{token}", keys=get_settings().all_secrets),
                    **context)
    if fresh:
        response.set_cookie(COOKIE, nonce, path="/preferences", httponly=True, samesite="lax",
                            secure=get_settings().base_url.startswith("https://"),
                            max_age=86400)
    return response


def _form_ok(request: Request, form: Form, token: str) -> bool:
    nonce = request.cookies.get(COOKIE, "")
    return bool(nonce) and verify(_FORM_PURPOSE, f"{nonce}:{token}", form.get("csrf"),
                                     keys=get_settings().all_secrets)


async def _read(request: Request) -> Form:
    try:
        return await read_form(request)
    except BadForm:
        return Form()  # no CSRF token in it: answered as an expired form


def _origin(request: Request) -> service.Origin:
    return service.Origin(ip=client_ip(request), user_agent=request.headers.get("user-agent"))


def _link_problem(status: str) -> HTMLResponse:
    return page("preferences-invalid.html", 410 if status == "expired" else 404, status=status)


def _expired_form(back: str) -> HTMLResponse:
    return page("preferences-expired.html", 403, message=EXPIRED_FORM, back=back)
