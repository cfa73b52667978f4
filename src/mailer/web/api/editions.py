"""``/api/v1/editions``: list, read, preview, draft, edit, test, schedule, send and watch
editions of the digest, and acknowledge the complaints that hold every send (choosing an
edition's articles is ``edition_articles``).

The routes are the admin's and the CLI's actions over the same services: drafting and
editing are ``editions.service``'s, test copies, the schedule, the send, pause, resume,
cancel, progress and the acknowledgement are ``delivery.service``'s, and a send asks
:func:`~mailer.delivery.preflight.preflight` first, as the admin's confirmation and
``mailer editions send`` do: a failed check is a 409 problem listing every check that
failed (``checks``), and nothing is queued. Reads need ``editions:read``; every change
(drafting and editing too: an edition's words go to every reader) needs
``editions:send`` and is audited by its service as ``api:<token name>``.

Repeating an action is safe: a send of an edition already going out answers the audience
it froze then, a pause of a paused edition (a resume of a sending one, a cancel of a
cancelled one, an unschedule of a draft) answers ``changed: false``; a move the edition's
state does not allow is a 409.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from sqlalchemy.orm import Session

from mailer.api_tokens.service import Caller
from mailer.config import get_settings
from mailer.db import transaction, utcnow
from mailer.delivery import service as sending
from mailer.delivery.preflight import Check, complaint_hold, preflight
from mailer.editions import queries
from mailer.editions import service as editions
from mailer.editions.models import Edition, EditionState
from mailer.editions.snapshot import view_url
from mailer.editions.states import TransitionError
from mailer.ratelimit import hit
from mailer.web.api.articles import ArticleOut
from mailer.web.api.auth import require
from mailer.web.api.problems import MEDIA_TYPE, ApiProblem, Problem, field_errors, responses
from mailer.web.api.subscribers import TEXT
from mailer.web.bounds import RowId

router = APIRouter(prefix="/editions", tags=["editions"])

READ = Depends(require("editions:read"))
SEND = Depends(require("editions:send"))
#: A test copy goes to any address the caller names: at most this many a request (as the
#: admin's form), and this many addresses an hour per token.
TEST_COPY_ADDRESSES = 10
TEST_COPIES_PER_HOUR = 50
#: Line breaks and tabs, but no other control character (an intro is paragraphs).
PARAGRAPHS = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
READ_ERRORS = responses(400, 401, 403, 404, 422, 429)
WRITE_ERRORS = responses(400, 401, 403, 404, 409, 422, 429)


def _plausible(moment: dt.datetime) -> dt.datetime:
    """A time the calendar code can work with (a year 1 or 9999 cannot be shown in the
    association's time zone, or have a month before it)."""
    if not 2000 <= moment.year <= 2999:  # in its own offset: converting 9999 may overflow
        raise ValueError("a time between the years 2000 and 2999 is needed")
    return moment


Moment = Annotated[AwareDatetime, AfterValidator(_plausible)]


def _not_blank(value: str) -> str:
    if not value.split():
        raise ValueError("this cannot be empty or only spaces")
    return value


#: A line of words (a subject, a section's name): no control character, not blank.
Line = Annotated[str, AfterValidator(_not_blank)]


# --- what is answered ----------------------------------------------------------------------


class EditionSummary(BaseModel):
    id: int
    slug: str
    subject: str
    state: EditionState
    #: Articles published from ``window_start`` up to (not including) ``window_end``.
    window_start: dt.datetime
    window_end: dt.datetime
    articles: int
    scheduled_at: dt.datetime | None
    created_at: dt.datetime
    created_by: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    #: The readers the send froze; null until it starts.
    audience: int | None

    @classmethod
    def fields_of(cls, e: Edition, articles: int) -> dict[str, Any]:
        return {"id": e.id, "slug": e.slug, "subject": e.subject,
                "state": EditionState(e.state), "window_start": e.window_start,
                "window_end": e.window_end, "articles": articles,
                "scheduled_at": e.scheduled_at, "created_at": e.created_at,
                "created_by": e.created_by, "started_at": e.started_at,
                "finished_at": e.finished_at,
                "audience": e.audience_count if e.started_at is not None else None}


class EditionPage(BaseModel):
    items: list[EditionSummary]
    #: Pass as ``after`` for the next (older) page; null on the last one.
    next: str | None


class EditionOut(EditionSummary):
    preheader: str
    intro: str
    category_order: list[str]
    #: Why it is in its state (who paused it, why a scheduled send could not start).
    state_reason: str
    #: The web copy of the edition, once it has started to go out.
    archive_url: str | None
    #: The edition's articles (``articles`` is how many), in the edition's order.
    article_list: list[ArticleOut]

    @classmethod
    def of(cls, e: Edition) -> EditionOut:
        links = [link.article for link in e.articles]
        archived = e.archive_html is not None and e.started_at is not None
        return cls(**cls.fields_of(e, len(links)), preheader=e.preheader, intro=e.intro,
                   category_order=list(e.category_order or []), state_reason=e.state_reason,
                   archive_url=view_url(e, get_settings().base_url) if archived else None,
                   article_list=[ArticleOut.of(a) for a in links])


class Preview(BaseModel):
    """The mail as a reader gets it, with a made-up reader's values filled in."""

    subject: str
    html: str
    text: str
    #: The HTML's size in bytes (Gmail clips a message over about 102 kB).
    html_bytes: int


class FailedCheck(BaseModel):
    #: started, state, content, complaints or audience (delivery/preflight.py's checks)
    check: Check
    message: str


class SendRefused(Problem):
    """A send that was refused: every check that failed."""

    checks: list[FailedCheck] = []


class Sending(BaseModel):
    edition_id: int
    state: EditionState
    #: The readers the send froze (for a repeat: the ones it froze the first time).
    audience: int
    #: False when the edition was already going out (or out): nothing new was queued.
    started: bool


class StateChange(BaseModel):
    edition_id: int
    state: EditionState
    #: False when the edition was in that state already: nothing was done or recorded.
    changed: bool


class Cancelled(StateChange):
    #: Messages waiting to go out that now never will.
    cancelled: int


class TestCopy(BaseModel):
    address: str
    sent: bool
    #: The SMTP server's reply, or why it was not sent.
    result: str


class TestCopies(BaseModel):
    items: list[TestCopy]


class ProgressOut(BaseModel):
    edition_id: int
    state: EditionState
    reason: str
    audience: int
    #: Deliveries per state (queued, sending, sent, deferred, failed, bounced, skipped,
    #: cancelled).
    counts: dict[str, int]
    done: int
    remaining: int
    percent: float
    rate_per_second: float
    eta_seconds: float | None


# --- what is asked -------------------------------------------------------------------------


class Listing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: EditionState | None = None
    after: str | None = Field(None, max_length=20, pattern=r"^[0-9]{1,18}$",
                              description="`next` of the page before")
    limit: int = Field(50, ge=1, le=200)


def _after_start(end: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
    start = info.data.get("window_start")
    if start is not None and end is not None and start >= end:
        raise ValueError("the window must end after window_start")
    return end


class Draft(BaseModel):
    """A new draft with every article published in the window, newest first."""

    model_config = ConfigDict(extra="forbid")
    #: Default: where the last edition that went out ended (two months back for the first).
    window_start: Moment | None = None
    #: Default: now.
    window_end: Moment | None = None
    #: Default: "<list name> – <month>".
    subject: Line | None = Field(None, min_length=1, max_length=300, pattern=TEXT)

    _ordered = field_validator("window_end")(_after_start)


class Change(BaseModel):
    """What to change; a field left out stays. A new window chooses the articles again."""

    model_config = ConfigDict(extra="forbid")
    subject: Line | None = Field(None, min_length=1, max_length=300, pattern=TEXT)
    preheader: str | None = Field(None, max_length=300, pattern=TEXT)
    intro: str | None = Field(None, max_length=20_000, pattern=PARAGRAPHS)
    category_order: list[Annotated[Line, Field(min_length=1, max_length=200, pattern=TEXT)]] \
        | None = Field(None, max_length=100)
    window_start: Moment | None = None
    window_end: Moment | None = None

    _ordered = field_validator("window_end")(_after_start)

    @field_validator("category_order")
    @classmethod
    def _once_each(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and len({" ".join(n.split()) for n in names}) != len(names):
            raise ValueError("a category appears twice in the order")
        return names


class TestCopyTo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: list[Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]] \
        = Field(min_length=1, max_length=TEST_COPY_ADDRESSES)


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: Moment = Field(description="when beat starts the send; with its time zone")


class Pause(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500, pattern=TEXT)


# --- reading -------------------------------------------------------------------------------


def find_edition(session: Session, edition_id: int) -> Edition:
    edition = session.get(Edition, edition_id)
    if edition is None:
        raise ApiProblem(404, "There is no edition with this id.")
    return edition


@router.get("", response_model=EditionPage, summary="List editions",
            responses=responses(400, 401, 403, 422, 429))
def list_editions(caller: Annotated[Caller, READ],
                  params: Annotated[Listing, Query()]) -> EditionPage:
    """Newest first, a page at a time (keyset pagination)."""
    with transaction() as session:
        found = queries.edition_list(session, limit=params.limit + 1, state=params.state,
                                     before_id=int(params.after) if params.after else None)
        shown = found.editions[:params.limit]
        page = [EditionSummary(**EditionSummary.fields_of(e, found.articles.get(e.id, 0)))
                for e in shown]
        more = str(shown[-1].id) if len(found.editions) > params.limit else None
    return EditionPage(items=page, next=more)


@router.get("/{edition_id}", response_model=EditionOut, summary="One edition",
            responses=READ_ERRORS)
def get_one(caller: Annotated[Caller, READ], edition_id: RowId) -> EditionOut:
    with transaction() as session:
        return EditionOut.of(find_edition(session, edition_id))


@router.get("/{edition_id}/preview", response_model=Preview, summary="Preview an edition",
            responses=WRITE_ERRORS)
def preview(caller: Annotated[Caller, READ], edition_id: RowId) -> Preview:
    """The HTML and the text part as the admin's preview shows them: the frozen snapshot
    once the send has started, else the edition composed as it is now."""
    with transaction() as session:
        try:
            rendered = editions.render_preview(session, find_edition(session, edition_id),
                                               settings=get_settings())
        except editions.EditionError as exc:
            raise ApiProblem(409, str(exc)) from None
    return Preview(subject=rendered.subject, html=rendered.html, text=rendered.text,
                   html_bytes=len(rendered.html.encode()))


@router.get("/{edition_id}/progress", response_model=ProgressOut, summary="A send's progress",
            responses=READ_ERRORS)
def progress(caller: Annotated[Caller, READ], edition_id: RowId) -> ProgressOut:
    """Deliveries per state, the recent rate and the time left at that rate."""
    with transaction() as session:
        find_edition(session, edition_id)
        return ProgressOut.model_validate(sending.progress(session, edition_id).as_dict())


# --- drafting and editing ------------------------------------------------------------------


@router.post("", status_code=201, response_model=EditionOut, summary="Draft an edition",
             responses=responses(400, 401, 403, 422, 429))
def draft(caller: Annotated[Caller, SEND], body: Draft) -> EditionOut:
    """A window without any article drafts nothing: a 422 that says where the newest
    article is."""
    with transaction() as session:
        try:
            edition = editions.draft_edition(
                session, subject=body.subject, window_start=body.window_start,
                window_end=body.window_end, by=caller.actor, identity=get_settings().identity,
                require_articles=True)
        except editions.EmptyWindow as exc:
            hint = queries.empty_window_hint(session, earlier="start window_start before it",
                                             none_yet="No article has been imported yet.",
                                             zone=get_settings().identity.zone)
            raise ApiProblem(422, f"{exc} {hint}",
                             errors=field_errors(window_start=str(exc))) from None
        except editions.EditionError as exc:  # the default start is after the window_end
            raise ApiProblem(422, str(exc), errors=field_errors(window_end=str(exc))) from None
        return EditionOut.of(edition)


@router.patch("/{edition_id}", response_model=EditionOut, summary="Change an edition",
              responses=WRITE_ERRORS)
def change(caller: Annotated[Caller, SEND], edition_id: RowId, body: Change) -> EditionOut:
    """Subject, preheader, intro, the order of the sections, the window. Any change
    discards a snapshot frozen earlier, so what is sent is what was last previewed."""
    with transaction() as session:
        edition = find_edition(session, edition_id)
        start = body.window_start or edition.window_start
        end = body.window_end or edition.window_end
        if (body.window_start or body.window_end) and start >= end:
            wrong = "window_start" if body.window_start else "window_end"
            raise ApiProblem(422, "The window must start before it ends.", errors=field_errors(
                **{wrong: "the window must start before it ends"}))
        given = body.model_dump(exclude_unset=True)
        try:
            editions.update_edition(session, edition, by=caller.actor,
                                    identity=get_settings().identity, **given)
        except editions.NotEditable as exc:  # it has started to go out, or was cancelled
            raise ApiProblem(409, str(exc)) from None
        except editions.EditionError as exc:
            raise ApiProblem(422, str(exc)) from None
        return EditionOut.of(edition)


# --- test copies, the schedule, the send ---------------------------------------------------


@router.post("/{edition_id}/test", response_model=TestCopies, summary="Send test copies",
             responses=WRITE_ERRORS)
def test_copies(caller: Annotated[Caller, SEND], edition_id: RowId,
                body: TestCopyTo) -> TestCopies:
    """A copy marked "[TEST]" to each address, as a reader would get it; not counted, no
    delivery rows. An address the SMTP server refuses is answered with its reply."""
    with transaction() as session:
        find_edition(session, edition_id)
    if not all(hit(f"api-test-copy:{caller.token_id}", TEST_COPIES_PER_HOUR, 3600)
               for _ in body.to):
        raise ApiProblem(429, f"More than {TEST_COPIES_PER_HOUR} test copies in an hour "
                         "with this token.", headers={"Retry-After": "3600"})
    try:
        results = sending.send_test_copies(edition_id, body.to, by=caller.actor,
                                           settings=get_settings())
    except (editions.EditionError, sending.SendError) as exc:
        raise ApiProblem(409, f"No test copy was sent: {exc}") from None
    return TestCopies(items=[TestCopy(address=a, sent=r.startswith("sent"), result=r)
                             for a, r in results])


@router.post("/{edition_id}/schedule", response_model=EditionOut, summary="Schedule the send",
             responses=WRITE_ERRORS)
def schedule(caller: Annotated[Caller, SEND], edition_id: RowId,
             body: Schedule) -> EditionOut:
    """Beat starts the send at ``at`` (with :func:`preflight`'s checks then). Scheduling a
    scheduled edition again moves its time."""
    if body.at <= utcnow():
        raise ApiProblem(422, "That time is in the past.",
                         errors=field_errors(at="that time is in the past"))
    with transaction() as session:
        find_edition(session, edition_id)
        try:
            sending.schedule_send(session, edition_id, body.at, by=caller.actor,
                                  settings=get_settings())
        except (sending.SendError, TransitionError) as exc:
            raise ApiProblem(409, str(exc)) from None
        return EditionOut.of(find_edition(session, edition_id))


@router.delete("/{edition_id}/schedule", response_model=StateChange,
               summary="Unschedule the send", responses=WRITE_ERRORS)
def unschedule(caller: Annotated[Caller, SEND], edition_id: RowId) -> StateChange:
    """The edition is a draft again; a draft is answered ``changed: false``."""
    with transaction() as session:
        edition = find_edition(session, edition_id)
        if edition.state == EditionState.draft:
            return StateChange(edition_id=edition_id, state=EditionState.draft, changed=False)
        try:
            sending.unschedule(session, edition_id, by=caller.actor)
        except (sending.SendError, TransitionError) as exc:
            raise ApiProblem(409, f"Edition {edition_id} is {edition.state}: only a "
                             f"scheduled edition can be unscheduled ({exc}).") from None
        return StateChange(edition_id=edition_id, state=EditionState(edition.state),
                           changed=True)


SEND_ERRORS: dict[int | str, dict[str, Any]] = {
    **WRITE_ERRORS,
    409: {"model": SendRefused, "description": "The send's checks failed: `checks` lists "
          "them (delivery/preflight.py)", "content": {MEDIA_TYPE: {}}},
}


@router.post("/{edition_id}/send", status_code=202, response_model=Sending,
             summary="Send the edition now", responses=SEND_ERRORS)
def send(caller: Annotated[Caller, SEND], edition_id: RowId) -> Sending:
    """Freeze the audience (every confirmed, unsuppressed reader now) and queue the send.
    The checks are the admin's and ``mailer editions send``'s (preflight): an edition
    without articles or too large, a complaint rate over the stop level, nobody to send
    to, a paused or cancelled edition: a 409 with every check that failed."""
    with transaction() as session:
        edition = find_edition(session, edition_id)
        checked = preflight(session, edition, settings=get_settings())
        if checked.started:
            return Sending(edition_id=edition_id, state=EditionState(edition.state),
                           audience=edition.audience_count, started=False)
        if not checked.ok:
            raise _refused(checked.problems)
        try:
            audience = sending.start_send(session, edition_id, by=caller.actor,
                                          settings=get_settings())
        except (sending.SendError, editions.EditionError, TransitionError) as exc:
            raise _refused([], str(exc)) from None
        return Sending(edition_id=edition_id, state=EditionState(edition.state),
                       audience=audience, started=True)


def _refused(problems: list[Any], detail: str = "") -> ApiProblem:
    checks = [FailedCheck(check=p.check, message=p.message).model_dump(mode="json")
              for p in problems]
    return ApiProblem(409, detail or "Not sent: " + "; ".join(c["message"] for c in checks)
                      + ".", extensions={"checks": checks})


# --- pause, resume, cancel -----------------------------------------------------------------


def _act(edition_id: int, to: EditionState, action: Any) -> tuple[EditionState, Any]:
    """Run one sending-service action, unless the edition is in ``to`` already: the state
    after it, and what the action answered (None when nothing was done)."""
    with transaction() as session:
        edition = find_edition(session, edition_id)
        if edition.state == to:
            return to, None
        try:
            done = action(session)
        except (sending.SendError, TransitionError) as exc:
            raise ApiProblem(409, str(exc)) from None
        return EditionState(edition.state), done


@router.post("/{edition_id}/pause", response_model=StateChange, summary="Pause the send",
             responses=WRITE_ERRORS)
def pause(caller: Annotated[Caller, SEND], edition_id: RowId,
          body: Annotated[Pause | None, Body()] = None) -> StateChange:
    """Workers stop within a batch; nothing queued is lost. The reason is shown as the
    edition's ``state_reason``."""
    reason = " ".join((body.reason if body else "").split())

    def paused(session: Session) -> bool:
        sending.pause(session, edition_id, by=caller.actor,
                      reason=reason or f"paused by {caller.actor}")
        return True

    state, done = _act(edition_id, EditionState.paused, paused)
    return StateChange(edition_id=edition_id, state=state, changed=bool(done))


@router.post("/{edition_id}/resume", response_model=StateChange, summary="Resume the send",
             responses=WRITE_ERRORS)
def resume(caller: Annotated[Caller, SEND], edition_id: RowId) -> StateChange:
    """A paused send goes on where it stopped (unless complaints hold every send)."""

    def resumed(session: Session) -> bool:
        sending.resume(session, edition_id, by=caller.actor, sending=get_settings().sending)
        return True

    state, done = _act(edition_id, EditionState.sending, resumed)
    return StateChange(edition_id=edition_id, state=state, changed=bool(done))


@router.post("/{edition_id}/cancel", response_model=Cancelled, summary="Cancel the edition",
             responses=WRITE_ERRORS)
def cancel(caller: Annotated[Caller, SEND], edition_id: RowId) -> Cancelled:
    """What has not gone out never will; a draft or scheduled edition is never sent."""
    state, cancelled = _act(edition_id, EditionState.cancelled, lambda s: sending.cancel(
        s, edition_id, by=caller.actor))
    return Cancelled(edition_id=edition_id, state=state, changed=cancelled is not None,
                     cancelled=cancelled or 0)


# --- the complaint hold ----------------------------------------------------------------------


class Acknowledged(BaseModel):
    edition_id: int
    #: The edition's complaints acknowledged: all it has now (only more bring the hold back).
    complaints: int
    #: What still stops every send (another edition's complaints), or null: sends may go.
    hold: str | None


@router.post("/{edition_id}/complaints/acknowledge", response_model=Acknowledged,
             summary="Acknowledge an edition's complaints", responses=WRITE_ERRORS)
def acknowledge_complaints(caller: Annotated[Caller, SEND],
                           edition_id: RowId) -> Acknowledged:
    """A complaint rate at the stop level (``MAILER_COMPLAINT_STOP_RATE``, 0.3 %) holds
    every send (the send's ``complaints`` check names the edition) until someone has
    looked into the complaints and says so here, as the admin's button and ``mailer
    editions acknowledge`` do. A repeat acknowledges the complaints there are then."""
    with transaction() as session:
        find_edition(session, edition_id)
        try:
            complaints = sending.acknowledge_complaints(session, edition_id, by=caller.actor)
        except sending.SendError as exc:  # deleted meanwhile
            raise ApiProblem(409, str(exc)) from None
        hold = complaint_hold(session, sending=get_settings().sending)
    return Acknowledged(edition_id=edition_id, complaints=complaints, hold=hold)
