"""The bi-monthly rhythm: beat drafts the next edition and the editors are asked to review it.

``MAILER_EDITION_SCHEDULE_CRON`` is five crontab fields, minute hour day-of-month month
day-of-week, read in the association's time zone (``MAILER_TIMEZONE``); ``off`` switches
the schedule off. The default ``0 9 1-7 */2 2`` is the first Tuesday of every other month
(January, March, May…) at 09:00. Celery's crontab requires *both* the day of the month and
the day of the week to match (classic cron is satisfied by either), which is what makes
"day 1–7 and a Tuesday" the first Tuesday.

A run drafts an edition with every article since the last edition that went out. It
drafts nothing, and says so, when that window holds no article, or when an edition not
sent yet (a draft or a scheduled one) already covers part of that window. Nothing is
ever sent by the schedule: an editor reviews the draft and presses "Send" (or schedules it).

Each list has its rhythm: a list with no ``schedule_cron`` of its own follows the
setting (beat's ``draft-next-edition`` drafts one edition for each of them), one with its
own five fields is drafted by the hourly ``draft-list-editions`` in the hour its schedule
fires, and ``off`` is never drafted. One run per list and day (``ScheduledDraft.slot``:
the day, then ``/<slug>`` for every list but the first).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import crontab
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.config import IdentitySettings
from mailer.db import utcnow
from mailer.editions import service as editions
from mailer.editions.models import Edition, EditionState
from mailer.lists.models import MailingList
from mailer.lists.service import all_lists, first_list
from mailer.localtime import window_label
from mailer.staff.audit import record
from mailer.staff.models import ScheduledDraft

log = logging.getLogger(__name__)

ACTOR = "schedule"
OFF = ("", "off", "none", "disabled")


class ScheduleError(ValueError):
    pass


def edition_crontab(expression: str) -> crontab | None:
    """The schedule (``MAILER_EDITION_SCHEDULE_CRON``) as a Celery crontab; None when off."""
    expression = expression.strip()
    if expression.lower() in OFF:
        return None
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(f"MAILER_EDITION_SCHEDULE_CRON needs five fields (minute hour "
                            f"day-of-month month day-of-week), got {expression!r}")
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        schedule = crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                           month_of_year=month, day_of_week=day_of_week)
    except ValueError as exc:
        raise ScheduleError(f"MAILER_EDITION_SCHEDULE_CRON {expression!r}: {exc}") from None
    return schedule


def next_runs(expression: str, timezone: str, count: int = 1, *,
              after: dt.datetime | None = None) -> list[dt.datetime]:
    """The next ``count`` times the schedule ``expression`` fires after ``after`` (default:
    now), in the association's ``timezone``."""
    schedule = edition_crontab(expression)
    if schedule is None:
        return []
    zone = ZoneInfo(timezone)
    moment = (after or utcnow()).astimezone(zone)
    runs = []
    for _ in range(count):
        last, delta, _now = schedule.remaining_delta(moment, tz=zone)
        moment = (last + delta).astimezone(zone)
        runs.append(moment)
    return runs


@dataclass(frozen=True)
class DraftResult:
    slot: str
    outcome: str
    edition_id: int | None = None

    @property
    def drafted(self) -> bool:
        return self.edition_id is not None


def lists_on_the_setting(session: Session) -> list[MailingList]:
    """The open lists that follow ``MAILER_EDITION_SCHEDULE_CRON`` (no rhythm of their own)."""
    return [lst for lst in all_lists(session) if lst.schedule_cron is None]


def lists_due(session: Session, *, timezone: str, now: dt.datetime | None = None
              ) -> list[MailingList]:
    """The open lists with a rhythm of their own that has fired today (in ``timezone``) by
    ``now``: the hourly run drafts each once a day (its slot), so a run that comes late, or
    after a worker was down for a while, still finds what fired since midnight. A list whose
    rhythm cannot be read is left out, and logged."""
    now = now or utcnow()
    midnight = now.astimezone(ZoneInfo(timezone)).replace(hour=0, minute=0, second=0,
                                                          microsecond=0)
    due = []
    for lst in all_lists(session):
        if lst.schedule_cron is None or lst.schedule_cron.strip().lower() in OFF:
            continue
        try:
            [fires] = next_runs(lst.schedule_cron, timezone,
                                after=midnight - dt.timedelta(seconds=1))
        except ScheduleError as exc:
            log.warning("list %s: %s", lst.slug, exc)
            continue
        if fires <= now:
            due.append(lst)
    return due


def draft_on_schedule(session: Session, *, identity: IdentitySettings,
                      now: dt.datetime | None = None,
                      mailing_list: MailingList | None = None) -> DraftResult:
    """The scheduled run for ``mailing_list`` (the first list when None): draft its next
    edition, or say why not. Safe to run twice (one run per list and day of the schedule in
    the association's ``identity.timezone``)."""
    now = now or utcnow()
    lst = mailing_list or first_list(session)
    day = now.astimezone(ZoneInfo(identity.timezone)).date().isoformat()
    slot = day if lst.id == first_list(session).id else f"{day}/{lst.id}"
    run = ScheduledDraft(slot=slot, ran_at=now, outcome="running")
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        earlier = session.get(ScheduledDraft, slot)
        said = earlier.outcome if earlier else "unknown"
        return DraftResult(slot, f"already ran for {slot}: {said}")

    savepoint = session.begin_nested()
    # The run writes its own entry, with its outcome (below).
    edition = editions.draft_edition(session, window_end=now, by=ACTOR, identity=identity,
                                     audit=False, mailing_list=lst)
    window = window_label(edition.window_start, edition.window_end, zone=identity.zone)
    # An edition not sent yet whose window overlaps this one holds the same articles: the
    # editors have it to review already.
    covering = session.scalars(
        select(Edition).where(Edition.id != edition.id, Edition.list_id == lst.id,
                              Edition.state.in_([EditionState.draft, EditionState.scheduled]),
                              Edition.window_start < edition.window_end,
                              Edition.window_end > edition.window_start)
        .order_by(Edition.id)
    ).first()
    if covering is not None:
        savepoint.rollback()
        covered = window_label(covering.window_start, covering.window_end, zone=identity.zone)
        outcome = (f"nothing drafted: edition {covering.id} ({covering.state}) already covers "
                   f"this window ({covered})")
        _finish(session, run, outcome, "edition.schedule.skipped", covering.id)
        return DraftResult(slot, outcome)
    if not edition.articles:
        savepoint.rollback()
        outcome = f"nothing drafted: no article was published {window}"
        _finish(session, run, outcome, "edition.schedule.empty", None)
        return DraftResult(slot, outcome)
    savepoint.commit()
    outcome = f"drafted edition {edition.id} with {len(edition.articles)} article(s) from {window}"
    run.edition_id = edition.id
    _finish(session, run, outcome, "edition.draft", edition.id)
    return DraftResult(slot, outcome, edition.id)


def _finish(session: Session, run: ScheduledDraft, outcome: str, action: str,
            edition_id: int | None) -> None:
    run.outcome = outcome
    record(session, actor=ACTOR, action=action,
           target=f"edition:{edition_id}" if edition_id else f"schedule:{run.slot}",
           detail={"outcome": outcome})
    log.info("scheduled draft: %s", outcome,
             extra={"edition_id": edition_id} if edition_id else {})


def overview(session: Session, expression: str, timezone: str) -> dict[str, Any]:
    """For the ops page: the schedule ``expression``, its next run, the last run."""
    try:
        upcoming = next_runs(expression, timezone)
    except ScheduleError as exc:
        return {"cron": expression, "next": None, "last": None, "error": str(exc)}
    last = session.scalars(select(ScheduledDraft).order_by(ScheduledDraft.ran_at.desc())
                           .limit(1)).first()
    return {"cron": expression,
            "next": upcoming[0] if upcoming else None, "last": last}
