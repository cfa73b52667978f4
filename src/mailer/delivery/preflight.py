"""The checks before an edition goes out, written once.

The admin's confirmation page, ``mailer editions send`` and :func:`start_send` itself ask
:func:`preflight` and only word its answer: the problems (each with a code a program can
act on and a sentence staff understand) and the audience a send started now would reach.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.bounces.models import Bounce, BounceClass
from mailer.bounces.rates import edition_rates
from mailer.config import SendingSettings, Settings
from mailer.db import utcnow
from mailer.editions.errors import NotSendable
from mailer.editions.models import Edition, EditionState
from mailer.editions.service import check_sendable
from mailer.editions.states import EDITABLE, GONE_OUT
from mailer.subscribers.queries import audience_size

__all__ = ["Check", "Preflight", "Problem", "audience_size", "complaint_hold", "preflight"]


class Check(enum.StrEnum):
    """What a problem is about."""

    started = "started"  # it is going out or went out already: starting it changes nothing
    state = "state"  # paused or cancelled: it cannot be started
    content = "content"  # no articles, too large…: the edition's own problem
    complaints = "complaints"  # a recent edition's complaints hold every send
    audience = "audience"  # nobody would receive it


@dataclass(frozen=True)
class Problem:
    check: Check
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Preflight:
    edition_id: int
    #: Who a send started now would reach (None when not counted).
    audience: int | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def started(self) -> bool:
        """It is sending or sent already (and that is its only problem)."""
        return [p.check for p in self.problems] == [Check.started]

    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def about(self, check: Check) -> str | None:
        """The sentence of the problem with ``check``, if there is one."""
        return next((p.message for p in self.problems if p.check == check), None)


def nobody() -> Problem:
    return Problem(Check.audience,
                   "nobody would receive it: there is no confirmed, unsuppressed subscriber")


def preflight(session: Session, edition: Edition, *, settings: Settings,
              count_audience: bool = True) -> Preflight:
    """Whether ``edition`` can be sent now, and to how many readers (``settings``: the
    edition is composed with them; ``settings.sending`` holds the complaint stop level).

    ``count_audience=False`` leaves the audience to the caller (the send itself counts the
    rows it freezes instead of counting the readers twice)."""
    state = EditionState(edition.state)
    if state in (EditionState.sending, EditionState.sent):
        return Preflight(edition.id, edition.audience_count, [Problem(
            Check.started, f"edition {edition.id} is {state} already")])
    if state not in EDITABLE:
        return Preflight(edition.id, None, [Problem(
            Check.state, f"edition {edition.id} is {state}; only a draft or a scheduled "
            "edition can be sent")])
    problems = []
    try:
        check_sendable(session, edition, settings=settings)
    except NotSendable as exc:
        problems.append(Problem(Check.content, str(exc)))
    hold = complaint_hold(session, sending=settings.sending)
    if hold:
        problems.append(Problem(Check.complaints, hold))
    audience = audience_size(session, edition.list_id) if count_audience else None
    if audience == 0:
        problems.append(nobody())
    return Preflight(edition.id, audience, problems)


# --- complaints: stop at 0.3 % until someone acknowledges -----------------------------------


def complaint_hold(session: Session, *, sending: SendingSettings,
                   edition_id: int | None = None) -> str | None:
    """Why no edition may go out now: a recent edition's complaint rate reached the stop
    level (``complaint_stop_rate``) with complaints nobody has acknowledged. None if clear.

    Every batch asks, so the common answer is cheap: an edition without unacknowledged
    complaints (a look at the few bounce rows of that class) is not counted at all."""
    stop_rate = sending.complaint_stop_rate
    recent = utcnow() - dt.timedelta(days=60)
    query = select(Edition).where(Edition.state.in_(GONE_OUT), Edition.started_at >= recent)
    if edition_id is not None:
        query = query.where(Edition.id == edition_id)
    for edition in session.scalars(query.order_by(Edition.id.desc()).limit(6)):
        acknowledged = int((edition.stats or {}).get("complaints_acknowledged", -1))
        complaints = int(session.scalar(
            select(func.count()).select_from(Bounce)
            .where(Bounce.edition_id == edition.id, Bounce.bounce_class == BounceClass.complaint)
        ) or 0)
        if complaints == 0 or complaints <= acknowledged:
            continue
        rates = edition_rates(session, edition.id, sending)
        if rates["complaint_stop"] and rates["complaints"] > acknowledged:
            return (f"edition {edition.id} has a complaint rate of "
                    f"{100 * rates['complaint_rate']:.2f} % ({rates['complaints']} complaints), "
                    f"at or over the {100 * stop_rate:.1f} % stop level: "
                    f"look into it, then acknowledge it (mailer editions acknowledge "
                    f"{edition.id}) before sending more")
    return None
