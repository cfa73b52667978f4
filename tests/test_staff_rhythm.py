"""The bi-monthly rhythm: beat's schedule really is the first Tuesday of every other month,
a run drafts the next edition and mails the editors a link, an empty window drafts nothing
and says so, and no window is ever drafted twice."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from mailer.config import EditionSettings, IdentitySettings, Settings, get_settings
from mailer.db import transaction
from mailer.editions import rhythm
from mailer.editions import service as editions
from mailer.editions.models import Edition
from mailer.editions.review_mail import send_review_mails
from mailer.staff.models import AuditEntry, ScheduledDraft
from tests.conftest import wait_for
from tests.support.admin import make_staff
from tests.support.factories import make_articles
from tests.support.mail import links, parse, parts

IDENTITY = IdentitySettings()  # the association as the tests' stack has it
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
DEFAULT_CRON = EditionSettings().edition_schedule_cron


def beat_entry(cron: str = DEFAULT_CRON) -> object:
    """The drafting entry of the beat schedule that ``MAILER_EDITION_SCHEDULE_CRON=cron``
    gives."""
    from workers.app import beat_schedule

    settings = Settings(editions=EditionSettings(edition_schedule_cron=cron))
    return beat_schedule(settings).get("draft-next-edition", {}).get("schedule")


def runs_of(schedule, start: dt.datetime, count: int) -> list[dt.datetime]:  # type: ignore[no-untyped-def]
    out, moment = [], start
    for _ in range(count):
        last, delta, _ = schedule.remaining_delta(moment, tz=AMSTERDAM)
        moment = (last + delta).astimezone(AMSTERDAM)
        out.append(moment)
    return out


def test_the_default_schedule_is_the_first_tuesday_of_every_other_month() -> None:
    schedule = beat_entry()
    assert schedule is not None
    runs = runs_of(schedule, dt.datetime(2025, 12, 31, 12, tzinfo=AMSTERDAM), 12)
    assert [r.date() for r in runs[:6]] == [dt.date(2026, 1, 6), dt.date(2026, 3, 3),
                                            dt.date(2026, 5, 5), dt.date(2026, 7, 7),
                                            dt.date(2026, 9, 1), dt.date(2026, 11, 3)]
    for run in runs:
        assert run.isoweekday() == 2 and run.day <= 7 and run.month % 2 == 1
        assert (run.hour, run.minute) == (9, 0)  # in Amsterdam, summer and winter
    assert runs == rhythm.next_runs(DEFAULT_CRON, "Europe/Amsterdam", 12,
                                    after=dt.datetime(2025, 12, 31, 12, tzinfo=AMSTERDAM))

    # What beat asks: is it due? Not on a day 1–7 that is no Tuesday (cron's "or" would
    # say yes), not on the second Tuesday, yes on the first.
    def due(now: dt.datetime, last: dt.datetime) -> bool:
        from celery.schedules import crontab

        probe = crontab(minute="0", hour="9", day_of_month="1-7", month_of_year="*/2",
                        day_of_week="2", nowfun=lambda: now)
        probe.tz = AMSTERDAM  # type: ignore[misc]
        return probe.is_due(last).is_due

    january = dt.datetime(2026, 1, 6, 9, 0, tzinfo=AMSTERDAM)
    assert due(dt.datetime(2026, 3, 3, 9, 0, 30, tzinfo=AMSTERDAM), january)
    assert not due(dt.datetime(2026, 3, 2, 9, 0, 30, tzinfo=AMSTERDAM), january)  # Monday 2nd
    assert not due(dt.datetime(2026, 3, 1, 9, 0, 30, tzinfo=AMSTERDAM), january)  # Sunday 1st
    march = dt.datetime(2026, 3, 3, 9, 0, tzinfo=AMSTERDAM)
    assert not due(dt.datetime(2026, 3, 10, 9, 0, 30, tzinfo=AMSTERDAM), march)
    assert not due(dt.datetime(2026, 4, 7, 9, 0, 30, tzinfo=AMSTERDAM), march)  # even month


def test_the_schedule_can_be_changed_or_switched_off() -> None:
    assert beat_entry("off") is None and rhythm.next_runs("off", "Europe/Amsterdam", 3) == []
    after = dt.datetime(2026, 1, 1, tzinfo=AMSTERDAM)
    assert [r.date() for r in runs_of(beat_entry("30 8 * 1,7 1"), after, 2)] == [
        dt.date(2026, 1, 5), dt.date(2026, 1, 12)]
    for bad in ("0 9 * *", "0 25 * * 2", "every tuesday"):
        with pytest.raises(rhythm.ScheduleError, match="MAILER_EDITION_SCHEDULE_CRON"):
            rhythm.edition_crontab(bad)


def outcomes() -> list[tuple[str, str]]:
    with transaction() as session:
        return [(a.action, a.detail["outcome"]) for a in session.scalars(
            select(AuditEntry).where(AuditEntry.actor == "schedule").order_by(AuditEntry.id))]


def test_beat_drafts_the_next_edition_and_mails_the_editors(clean, worker) -> None:
    from workers.maintenance import draft_next_edition

    make_articles(4)
    make_staff("anna.editor@example.org", "editor")
    make_staff("bert.editor@example.org", "editor")
    make_staff("viewer@example.org", "viewer")
    make_staff("gone@example.org", "editor")
    from typer.testing import CliRunner

    from mailer.cli import app as cli

    assert CliRunner().invoke(cli, ["staff", "disable", "gone@example.org"]).exit_code == 0

    draft_next_edition.delay()
    mails = wait_for(lambda: len(clean.smtp.messages) >= 2 and clean.smtp.messages,
                     timeout=60, what="the review mails")
    with transaction() as session:
        [edition] = session.scalars(select(Edition)).all()
        assert edition.state == "draft" and edition.created_by == "schedule"
        assert len(edition.articles) == 4
        edition_id = edition.id
    assert sorted(r for m in mails for r in m.rcpt_tos) == ["anna.editor@example.org",
                                                            "bert.editor@example.org"]
    msg = parse(mails[0])
    assert msg["Subject"] == f"Ready for review: {edition.subject}"
    assert msg.get("List-Unsubscribe") is None  # staff mail, not a newsletter
    text, html = parts(msg)
    review = f"{clean.env['MAILER_BASE_URL']}/admin/editions/{edition_id}"
    assert review in links(text) and review in links(html)
    assert "Article number 0 about probation in Europe" in text
    assert "Nothing goes out until an editor" in text
    [(action, said)] = outcomes()
    assert action == "edition.draft" and re.match(rf"drafted edition {edition_id} with 4 ", said)

    # Run again the same day (a redelivered task, a second beat): nothing is drafted or mailed.
    assert draft_next_edition().startswith("already ran for ")
    with transaction() as session:
        assert len(session.scalars(select(Edition)).all()) == 1
    assert len(clean.smtp.messages) == 2
    with transaction() as session:
        mailed = session.scalars(select(AuditEntry.actor).where(
            AuditEntry.action == "edition.review_mail")).all()
    assert sorted(mailed) == ["anna.editor@example.org", "bert.editor@example.org"]


def _slots() -> list[ScheduledDraft]:
    with transaction() as session:
        return list(session.scalars(select(ScheduledDraft)))


def run(now: dt.datetime) -> rhythm.DraftResult:
    with transaction() as session:
        return rhythm.draft_on_schedule(session, identity=IDENTITY, now=now)


def test_an_empty_window_drafts_nothing_and_says_so(clean) -> None:
    result = run(dt.datetime(2026, 3, 3, 9, tzinfo=AMSTERDAM))
    assert not result.drafted
    assert result.outcome.startswith("nothing drafted: no article was published")
    assert "3 January 2026 – 3 March 2026" in result.outcome
    with transaction() as session:
        assert session.scalars(select(Edition)).all() == []
    [(action, said)] = outcomes()
    assert action == "edition.schedule.empty" and said == result.outcome
    [slot] = _slots()
    assert slot.slot == "2026-03-03" and slot.outcome == result.outcome


def test_never_two_drafts_for_the_same_window(clean) -> None:
    make_articles(3)
    now = dt.datetime.now(AMSTERDAM)
    first = run(now)
    assert first.drafted
    again = run(now + dt.timedelta(minutes=5))  # the same day: the same run
    assert not again.drafted and again.outcome.startswith(f"already ran for {first.slot}")
    # The next day, the draft still waits for review: it covers the window.
    later = run(now + dt.timedelta(days=1))
    assert not later.drafted
    assert later.outcome == (f"nothing drafted: edition {first.edition_id} (draft) already "
                             f"covers this window ({_label(first.edition_id)})")
    # An editor's own draft of the same window counts too.
    with transaction() as session:
        session.get(Edition, first.edition_id).state = "cancelled"
        mine = editions.draft_edition(session, identity=IDENTITY, by="anna@example.org")
        mine_id = mine.id
    blocked = run(now + dt.timedelta(days=2))
    assert not blocked.drafted and f"edition {mine_id} (draft)" in blocked.outcome
    with transaction() as session:
        assert len(session.scalars(select(Edition)).all()) == 2
    assert [a for a, _ in outcomes()] == ["edition.draft", "edition.schedule.skipped",
                                          "edition.schedule.skipped"]


def _label(edition_id: int | None) -> str:
    from mailer.localtime import window_label

    with transaction() as session:
        edition = session.get(Edition, edition_id)
        return window_label(edition.window_start, edition.window_end, zone=IDENTITY.zone)


def test_a_review_mail_that_fails_for_a_while_is_sent_once_later(clean) -> None:
    make_articles(2)
    make_staff("anna.editor@example.org", "editor")
    make_staff("bert.editor@example.org", "editor")
    result = run(dt.datetime.now(AMSTERDAM))
    clean.smtp.behaviour.add("bert.editor@example.org", "rcpt", "451 4.3.0 Try later", times=1)
    first = {m.to: m.result for m in send_review_mails(result.edition_id, settings=get_settings())}
    assert first["anna.editor@example.org"] == "sent"
    assert first["bert.editor@example.org"].startswith("retry: ")
    second = {m.to: m.result for m in send_review_mails(result.edition_id, settings=get_settings())}
    assert second == {"anna.editor@example.org": "already", "bert.editor@example.org": "sent"}
    assert sorted(r for m in clean.smtp.messages for r in m.rcpt_tos) == [
        "anna.editor@example.org", "bert.editor@example.org"]


def test_the_migration_makes_the_table_the_model_describes(clean) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mailer.db import get_engine
    from mailer.models import Base

    with get_engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    mine = [d for d in diff if "scheduled_draft" in repr(d)]
    assert mine == []


def test_each_list_has_its_own_rhythm(clean) -> None:
    from mailer.lists import service as lists

    make_articles(2)
    with transaction() as session:
        events = lists.create(session, slug="events", name="CEP Events",
                              list_id="events.cep-probation.example.org",
                              schedule_cron="0 8 * * 1")  # Mondays at 08:00
        quiet = lists.create(session, slug="quiet", name="Quiet",
                             list_id="quiet.cep-probation.example.org", schedule_cron="off")
        also = lists.create(session, slug="also", name="Also on the setting",
                            list_id="also.cep-probation.example.org")
        events_id, quiet_id, also_id = events.id, quiet.id, also.id
    today = dt.datetime.now(AMSTERDAM)  # the next Monday, 08:01: after the articles
    monday = (today + dt.timedelta(days=7 - today.weekday())).replace(hour=8, minute=1)
    day = monday.date().isoformat()
    with transaction() as session:
        assert [lst.id for lst in rhythm.lists_due(session, timezone=IDENTITY.timezone,
                                                   now=monday)] == [events_id]
        # Later that day (a run that came late) it is still due: once a day, by its slot.
        assert [lst.id for lst in rhythm.lists_due(
            session, timezone=IDENTITY.timezone, now=monday + dt.timedelta(hours=5))] == [
            events_id]
        assert rhythm.lists_due(session, timezone=IDENTITY.timezone,
                                now=monday - dt.timedelta(hours=2)) == []  # not yet
        assert rhythm.lists_due(session, timezone=IDENTITY.timezone,
                                now=monday + dt.timedelta(days=1)) == []  # Tuesday
        assert [lst.id for lst in rhythm.lists_on_the_setting(session)] == [1, also_id]
        assert quiet_id not in [lst.id for lst in rhythm.lists_on_the_setting(session)]
        result = rhythm.draft_on_schedule(session, identity=IDENTITY, now=monday,
                                          mailing_list=session.get(type(events), events_id))
    assert result.drafted and result.slot == f"{day}/{events_id}", result.outcome
    with transaction() as session:
        again = rhythm.draft_on_schedule(session, identity=IDENTITY, now=monday,
                                         mailing_list=session.get(type(events), events_id))
    assert not again.drafted and again.outcome.startswith("already ran")
    first = run(monday)  # the first list, the same day: a run of its own
    assert first.drafted and first.slot == day, first.outcome
    with transaction() as session:
        lists_of = sorted(session.scalars(select(Edition.list_id)))
    assert lists_of == [1, events_id]  # the first list's draft does not cover the other's
