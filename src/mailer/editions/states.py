"""The edition's states and the one place they change.

    draft ──▶ scheduled ──▶ sending ──▶ sent
      │  ◀────────┘          │  ▲
      │                      ▼  │
      │                     paused
      └──────────┬───────────┘
                 ▼
             cancelled

Every change goes through :func:`transition`, a conditional UPDATE: two workers (or a
worker and an editor) racing to move the same edition cannot both win, and a move that is
not allowed from the current state raises :class:`TransitionError`.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from mailer.db import utcnow
from mailer.editions.models import Edition, EditionState
from mailer.webhooks.events import EDITION_PAUSED, EDITION_SENDING, EDITION_SENT, emit

S = EditionState
ALLOWED: dict[EditionState, set[EditionState]] = {
    S.draft: {S.scheduled, S.sending, S.cancelled},
    S.scheduled: {S.draft, S.sending, S.cancelled},
    S.sending: {S.paused, S.sent, S.cancelled},
    S.paused: {S.sending, S.cancelled},
    S.sent: set(),
    S.cancelled: set(),
}

#: Nothing has gone out yet: the edition may still be changed, scheduled, started.
EDITABLE = frozenset({S.draft, S.scheduled})
#: It has started to go out: its window counts as covered, its complaints count.
GONE_OUT = frozenset({S.sending, S.paused, S.sent})
#: Being sent, or held on the way: its deliveries may still change.
UNDER_WAY = frozenset({S.sending, S.paused})


#: The states other systems hear of (outgoing webhooks).
EVENT_OF = {S.sending: EDITION_SENDING, S.paused: EDITION_PAUSED, S.sent: EDITION_SENT}


def can_become(state: str, to: EditionState) -> bool:
    """Whether an edition that is ``state`` may move to ``to`` (the table above)."""
    return to in ALLOWED[EditionState(state)]


class TransitionError(Exception):
    pass


def transition(session: Session, edition: Edition, to: EditionState, *, reason: str = "",
               allow_same: bool = False) -> bool:
    """Move ``edition`` to ``to``. False if it already was there (and ``allow_same``)."""
    current = EditionState(edition.state)
    if current == to and allow_same:
        return False
    if to not in ALLOWED[current]:
        raise TransitionError(f"an edition that is {current} cannot become {to}")
    now = utcnow()
    values: dict[str, object] = {"state": to, "state_reason": reason[:2000], "updated_at": now}
    if to == S.sending and edition.started_at is None:
        values["started_at"] = now
    if to in (S.sent, S.cancelled):
        values["finished_at"] = now
    result = session.execute(
        update(Edition).where(Edition.id == edition.id, Edition.state == current).values(**values)
    )
    changed = cast(CursorResult[Any], result).rowcount
    if not changed:
        session.refresh(edition)
        if edition.state == to and allow_same:
            return False
        raise TransitionError(f"edition {edition.id} changed state meanwhile (now {edition.state})")
    session.refresh(edition)
    if to in EVENT_OF:
        emit(session, EVENT_OF[to], {"edition": {
            "id": edition.id, "subject": edition.subject, "state": str(edition.state),
            "reason": edition.state_reason}})
    return True
