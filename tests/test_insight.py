"""Insight (issue 15): an edition's figures after a real send, the list over time and
deliverability, each chart's CSV, in Chromium light and dark at 375 px, and that nothing
stored or logged ties a click to a reader."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from urllib.parse import urlsplit

import httpx
import lxml.html
import pytest
from sqlalchemy import MetaData, select, update

from mailer import tasks
from mailer.clicks.models import EditionLink
from mailer.db import get_engine, transaction, utcnow
from mailer.deliveries.models import Delivery
from mailer.insight import charts
from mailer.insight.models import EditionDeferral
from mailer.insight.tables import Table
from mailer.subscribers.models import ConsentEvent, Subscriber
from tests.conftest import wait_for, wait_settled
from tests.support.admin import PASSWORD, Admin, make_staff
from tests.support.factories import make_edition, make_subscribers, start, wait_sent
from tests.support.mail import parse, parts
from tests.support.processes import WebServer, free_port

BROWSER = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/126.0 Safari/537.36")
SAFE_LINKS = "Mozilla/5.0 (compatible; Microsoft SafeLinks scanner)"
TRACKED = re.compile(r"https?://[^\s\"<>]+/r/\d+/\d+/[\w-]+")
EDITOR = "editor@cep.example"


def _csv(admin: Admin, path: str) -> list[list[str]]:
    answer = admin.get(path)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    return list(csv.reader(io.StringIO(answer.text)))


def _tables(session_dump: dict[str, list[tuple]]) -> dict[str, set[tuple]]:  # type: ignore[type-arg]
    return {name: set(rows) for name, rows in session_dump.items()}


def _dump() -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    """Every row of every table, as it is now."""
    meta = MetaData()
    engine = get_engine()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {name: [tuple(str(v) for v in row) for row in conn.execute(table.select())]
                for name, table in meta.tables.items()}


def _send(rig, web_url: str) -> tuple[int, list[str], list]:  # type: ignore[no-untyped-def]
    readers = make_subscribers(8)
    greylisted, hard, policy = readers[1], readers[2], readers[3]
    smtp = rig.stack.smtp
    smtp.behaviour.add(greylisted, "rcpt", "451 4.7.1 Greylisted, try again later", times=1)
    smtp.behaviour.add(hard, "rcpt", "550 5.1.1 <x>: Recipient address rejected: User unknown")
    smtp.behaviour.add(policy, "data", "554 5.7.1 Message rejected as spam by content filter")
    edition_id = make_edition(articles=2)
    make_staff(EDITOR)  # mailed the report once the send finishes
    make_staff("viewer@cep.example", "viewer")  # not mailed
    rig.worker()
    rig.beat()  # the sweeper drives the retry of the greylisted one
    assert start(edition_id) == 8
    wait_sent(edition_id, timeout=90)
    return edition_id, readers, list(smtp.messages)


def test_an_editions_figures_after_a_real_send_and_real_clicks(rig) -> None:
    stack = rig.stack
    server = WebServer({**stack.env, **rig.env}, stack.tmp / "insight-web.log", free_port())
    server.start()
    try:
        _figures_after_a_send(rig, server.url)
    finally:
        server.stop()


def _figures_after_a_send(rig, web_url: str) -> None:  # type: ignore[no-untyped-def]
    stack = rig.stack
    edition_id, readers, messages = _send(rig, web_url)
    by_reader = {m.rcpt_tos[0]: parse(m) for m in messages if m.rcpt_tos[0] in readers}
    assert len(by_reader) == 6  # delivered: all but the hard bounce and the policy refusal

    # Two readers unsubscribe: one from the mail program (one-click, the link of this
    # edition), one with a link whose edition they were never sent (believed not).
    leaving, other = readers[0], readers[4]
    header = by_reader[leaving]["List-Unsubscribe"].strip("<>")
    assert header.endswith(f"?edition={edition_id}")
    url = header.replace(stack.base_url, web_url)
    assert httpx.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    forged = by_reader[other]["List-Unsubscribe"].strip("<>").replace(
        stack.base_url, web_url).replace(f"?edition={edition_id}", f"?edition={edition_id + 5}")
    page = httpx.get(forged)
    # Not believed on the page either: its button names the list instead of that edition.
    assert f"?edition={edition_id + 5}" not in page.text and "?list=1" in page.text
    assert httpx.post(forged).status_code == 200
    with transaction() as session:
        events = {email: event for event, email in session.execute(
            select(ConsentEvent, Subscriber.email).join(Subscriber)
            .where(ConsentEvent.kind == "unsubscribed"))}
    assert events[leaving].edition_id == edition_id and events[leaving].channel == "one-click"
    assert events[other].edition_id is None and events[other].channel == "link"

    # Clicks: the first article three times, the second once, a scanner once.
    text, html = parts(by_reader[readers[5]])
    tracked = list(dict.fromkeys(TRACKED.findall(html)))
    first, second = (urlsplit(u).path for u in tracked[:2])
    before = _dump()
    logs = {log: log.stat().st_size for log in stack.tmp.glob("*.log")}
    client = httpx.Client(timeout=10)
    for path, agent in [(first, BROWSER)] * 3 + [(second, BROWSER), (first, SAFE_LINKS)]:
        assert client.get(web_url + path, headers={"user-agent": agent}).status_code == 303
    tasks.publish(tasks.FLUSH_CLICKS, session=None)
    position = int(first.split("/")[3])

    def flushed() -> bool:
        with transaction() as session:
            row = session.get(EditionLink, (edition_id, position))
            return row is not None and row.clicks == 3

    wait_for(flushed, what="the clicks' flush")
    after = _dump()

    # Nothing stored ties a click to a reader: the clicks changed the link counts and
    # added a flush's id, and nothing else in any table.
    old, new = _tables(before), _tables(after)
    changed = {name for name in new if new[name] != old.get(name)} - {"sender_process"}
    assert changed == {"edition_link", "click_flush"}
    with transaction() as session:
        public_ids = set(session.scalars(select(Subscriber.public_id)))
        emails = set(session.scalars(select(Subscriber.email)))
    added = "".join("".join(row) for row in new["click_flush"] - old["click_flush"])
    assert not any(p in added for p in public_ids) and not any(e in added for e in emails)
    # Nor does any log line (web, workers, beat) written while the clicks were counted.
    assert any(log.name == "insight-web.log" for log in logs)
    for log, size in logs.items():
        with log.open("rb") as handle:
            handle.seek(size)
            written = handle.read().decode(errors="replace")
        assert "/r/" not in written, log
        assert not any(p in written for p in public_ids | emails), log

    _the_report_mail(stack, edition_id)
    admin = Admin(web_url)
    admin.login(EDITOR)
    answer = admin.get(f"/admin/editions/{edition_id}/insight")
    assert answer.status_code == 200
    assert "script" not in answer.headers["content-security-policy"].split("script-src")[0]
    page = lxml.html.fromstring(answer.text)
    figure = {el.get("data-figure"): el.text_content().strip()
              for el in page.xpath("//*[@data-figure]")}
    assert figure == {"delivered": "6", "deferred": "1", "bounced": "2", "complaints": "0",
                      "unsubscribes": "1", "clicks": "4"}
    assert len(page.xpath("//figure//svg[@class='chart']")) == 5
    assert not page.xpath("//svg//script|//svg//*[@onload]")
    base = f"/admin/editions/{edition_id}/insight"
    for link in page.xpath("//a[@class='csv']/@href"):
        assert link.startswith(base + "/")

    outcome = _csv(admin, f"{base}/outcome.csv")
    assert outcome[0] == ["what", "count"]
    rows = dict((what, int(n)) for what, n in outcome[1:])
    assert rows["delivered"] == 6 and rows["deferred at least once"] == 1
    assert rows["bounced: hard"] == 1 and rows["bounced: policy"] == 1
    assert rows["bounced: soft"] == 0 and rows["unsubscribes from it"] == 1
    clicks = _csv(admin, f"{base}/clicks.csv")
    assert clicks[0] == ["link", "url", "clicks", "link checkers and previews"]
    with transaction() as session:
        urls = dict(session.execute(select(EditionLink.position, EditionLink.url)
                                    .where(EditionLink.edition_id == edition_id)).all())
    assert clicks[1][1:] == [urls[position], "3", "1"]
    assert clicks[2][2:] == ["1", "0"]
    assert {int(row[2]) for row in clicks[3:]} <= {0}
    minutes = _csv(admin, f"{base}/per-minute.csv")
    assert minutes[0] == ["minute", "messages", "refused"]
    assert sum(int(n) for _, n, _ in minutes[1:]) == 6  # accepted
    assert sum(int(n) for _, _, n in minutes[1:]) == 2  # the hard and the policy refusal
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", m) for m, _, _ in minutes[1:])
    deferrals = _csv(admin, f"{base}/deferrals.csv")
    assert deferrals[1] == ["example.net", "8", "6", "1", "2", "12.5"]
    # Over time: per minute, as many deferrals as the server answered 4xx, and the page's
    # table is the CSV.
    over_time = _csv(admin, f"{base}/deferrals-per-minute.csv")
    temporary = [a for a in stack.smtp.behaviour.given if a[2].startswith("4")]
    assert over_time[0] == ["minute", "example.net"] and len(temporary) == 1
    assert sum(int(n) for _, n in over_time[1:]) == len(temporary)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", m) for m, _ in over_time[1:])
    shown = page.xpath("//figure[@id='chart-deferrals-per-minute']//table//tr")
    assert [[c.text_content() for c in row.xpath("th|td")] for row in shown] == over_time
    assert page.xpath("//figure[@id='chart-deferrals-per-minute']//svg//polyline")
    assert admin.get(f"{base}/nothing.csv").status_code == 404
    assert admin.get(f"/admin/editions/{edition_id + 99}/insight").status_code == 404

    # The list over time: this week's unsubscribes by channel and bounces; statuses now.
    weeks = _csv(admin, "/admin/insight/list/weeks.csv?weeks=4")
    assert weeks[0] == ["week", "confirmed sign-ups", "unsubscribes", "bounces", "complaints"]
    assert len(weeks) == 5 and weeks[-1][2:] == ["2", "2", "0"]
    assert [r[2] for r in weeks[1:-1]] == ["0", "0", "0"]
    channels = _csv(admin, "/admin/insight/list/unsubscribes.csv?weeks=4")
    assert channels[0] == ["week", "link", "one-click"] and channels[-1][1:] == ["1", "1"]
    statuses = dict(_csv(admin, "/admin/insight/list/statuses.csv")[1:])
    assert statuses == {"confirmed": "6", "unsubscribed": "2"}
    listing = admin.get("/admin/insight/list?weeks=4")
    assert listing.status_code == 200 and listing.text.count('class="chart"') == 3

    # Deliverability: the domain, with its last reply codes.
    domains = _csv(admin, "/admin/insight/deliverability/domains.csv?editions=5")
    assert domains[0][:5] == ["domain", "deliveries", "accepted", "deferred", "refused"]
    assert domains[1][:7] == ["example.net", "8", "6", "1", "2", "12.5", "25.0"]
    assert set(domains[1][7].split()) == {"250×6", "550×1", "554×1"}
    assert admin.get("/admin/insight/deliverability?editions=x").status_code == 200
    _the_summaries_are_the_live_counts(edition_id)
    for path in ("/admin/insight/list?weeks=99999999999", "/admin/insight/list?weeks=-1",
                 "/admin/insight/deliverability?editions=0"):
        assert admin.get(path).status_code == 200
    admin.close()


def _the_report_mail(stack, edition_id: int) -> None:  # type: ignore[no-untyped-def]
    """The editors' report, mailed once the send finished, meets the message standards."""
    from email.utils import parsedate_to_datetime
    from html import unescape

    from mailer.insight.models import EditionSummary
    from mailer.staff.models import AuditEntry
    from tests.support.mail import links

    [mail] = wait_for(lambda: stack.smtp.to(EDITOR), timeout=60, what="the report mail")
    assert not stack.smtp.to("viewer@cep.example")
    raw = mail.data
    assert mail.rcpt_tos == [EDITOR] and not mail.mail_from.startswith("bounces+")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = parse(mail)
    assert msg["Subject"] == "Sent: CEP Newsletter – test edition – 6 delivered"
    assert msg.get("List-Unsubscribe") is None  # staff mail, not a newsletter
    assert parsedate_to_datetime(msg["Date"]).utcoffset() is not None
    assert re.fullmatch(r"<report\.[^@<>\s]+@cep-probation\.example\.org>", msg["Message-ID"])
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text, html = parts(msg)
    for line in ("Readers in the audience: 8", "Delivered: 6 (75.0 %)",
                 "Deferred at least once: 1", "Bounced: 1 hard, 0 soft, 1 policy",
                 "Complaints: 0"):
        assert line in text, line
    assert "example.net (1 deferred, 2 refused)" in text
    assert re.search(r"^Most deferrals in a minute: 1 at \d{4}-\d\d-\d\d \d\d:\d\d UTC "
                     r"\(1 by example\.net\)\r$", text, re.MULTILINE)
    url = f"{stack.base_url}/admin/editions/{edition_id}/insight"
    assert url in links(text) and url in {unescape(u) for u in re.findall(r'href="([^"]+)"', html)}
    assert set(links(text)) <= {url, "https://www.cep-probation.org"}
    assert "Postbus 8284" in text and "Postbus 8284" in html
    with transaction() as session:  # summed at the end of the send; mailed once, audited
        assert session.get(EditionSummary, edition_id) is not None
        assert session.scalars(select(AuditEntry.actor).where(
            AuditEntry.action == "edition.report_mail")).all() == [EDITOR]
    from mailer.config import get_settings
    from mailer.insight.report import send_report_mails

    again = send_report_mails(edition_id, settings=get_settings())
    assert [(m.to, m.result) for m in again] == [(EDITOR, "already")]


def _the_summaries_are_the_live_counts(edition_id: int) -> None:
    """The pages read what the end of the send summed (one query for every edition on the
    deliverability page): the same figures as counting the delivery rows now."""
    from mailer.insight.deliverability import deliverability
    from mailer.insight.editions import DomainFigures, count_deliveries, edition_figures
    from mailer.insight.models import EditionSummary

    with transaction() as session:
        stored = session.get(EditionSummary, edition_id)
        live = count_deliveries(session, edition_id)
        assert stored is not None and stored.figures == live
        ranked = sorted(live["domains"], key=lambda r: (-r["deliveries"], r["domain"]))
        assert deliverability(session, 5).domains == [DomainFigures(**r) for r in ranked]
        figures = edition_figures(session, edition_id)
        assert figures is not None
        assert figures.domains == [DomainFigures(**r) for r in live["domains"]]
        assert figures.per_minute == [tuple(m) for m in live["per_minute"]]


def test_mailer_report_prints_the_figures(clean, worker) -> None:
    import json

    from typer.testing import CliRunner

    from mailer.cli import app as cli

    make_subscribers(3)
    edition_id = make_edition(articles=1)
    start(edition_id)
    wait_sent(edition_id)  # by the session's worker
    with transaction() as session:
        session.execute(update(EditionLink).where(
            EditionLink.edition_id == edition_id, EditionLink.position == 1).values(clicks=7))
    shown = CliRunner().invoke(cli, ["report", str(edition_id)])
    assert shown.exit_code == 0, shown.output
    assert "Readers in the audience" in shown.output and "Clicks per link" in shown.output
    data = json.loads(CliRunner().invoke(cli, ["report", str(edition_id), "--json"]).output)
    assert data["audience"] == 3 and data["clicks"] == 7 and data["state"] == "sent"
    assert data["links"][0]["clicks"] == 7
    missing = CliRunner().invoke(cli, ["report", str(edition_id + 50)])
    assert missing.exit_code == 1 and "There is no edition" in missing.output


def _finished_ago(edition_id: int, ago: dt.timedelta) -> None:
    from mailer.editions.models import Edition

    with transaction() as session:
        session.get(Edition, edition_id).finished_at = utcnow() - ago


def test_a_report_lost_while_the_broker_was_down_is_mailed_once_by_the_sweeper(
        rig, caplog) -> None:
    """Redis, the broker, is away when the last batch finishes the edition: the edition is
    sent and its report task is lost (logged). Once Redis is back, beat's sweep queues the
    report again, ten minutes after the finish, and a real worker mails each editor once,
    however many sweeps follow."""
    from mailer.delivery.service import finish_if_done
    from mailer.insight.report import ACTION, reports_to_resend
    from mailer.staff.models import AuditEntry
    from tests.support.factories import edition_state

    make_subscribers(3)
    edition_id = make_edition(articles=1)
    make_staff(EDITOR)
    assert start(edition_id) == 3  # its batch waits in Redis: no worker yet
    rig.redis.stop()  # the broker goes away (SIGKILL: nothing it held survives)
    tasks.reset()
    with transaction() as session:  # what the last batch leaves: every delivery answered
        session.execute(update(Delivery).where(Delivery.edition_id == edition_id).values(
            state="sent", attempts=1, sent_at=utcnow(), smtp_code=250))
    with transaction() as session:
        assert finish_if_done(session, edition_id)
    assert "could not publish a task after commit" in caplog.text
    assert edition_state(edition_id) == "sent"
    rig.redis.start()  # back, and empty: the report task is nowhere
    tasks.reset()
    with transaction() as session:  # the task gets ten minutes to arrive
        assert reports_to_resend(session) == []
    _finished_ago(edition_id, dt.timedelta(minutes=11))
    with transaction() as session:
        assert reports_to_resend(session) == [edition_id]

    rig.worker()
    rig.beat()  # sweeps every second (SENDING_ENV)
    [mail] = wait_for(lambda: rig.stack.smtp.to(EDITOR), timeout=60,
                      what="the report, queued by a sweep")
    assert parse(mail)["Subject"] == "Sent: CEP Newsletter – test edition – 3 delivered"
    # More sweeps run, one a second: none queues or sends it again.
    assert wait_settled(lambda: len(rig.stack.smtp.to(EDITOR)), quiet=4.0,
                        what="report mails") == 1
    with transaction() as session:
        assert session.scalars(select(AuditEntry.actor).where(
            AuditEntry.action == ACTION)).all() == [EDITOR]
        assert reports_to_resend(session) == []


def test_the_sweeper_reports_no_old_send_and_none_the_relay_refused(clean) -> None:
    """Sends finished over two days ago are not reported again; an editor's report being
    sent by another task at that moment is left to it; one the relay refused for good is
    not queued again."""
    from mailer.config import get_settings
    from mailer.editions.models import Edition
    from mailer.insight.report import (
        HOLD_PREFIX,
        RESEND_WINDOW,
        reports_to_resend,
        requeue_lost_reports,
        send_report_mails,
    )
    from mailer.redis import get_redis
    from mailer.staff import accounts
    from tests.support.bounce_mail import make_sent_edition

    old, recent = make_sent_edition(), make_sent_edition()
    with transaction() as session:
        for edition_id in (old, recent):
            session.get(Edition, edition_id).audience_count = 0
    _finished_ago(old, RESEND_WINDOW + dt.timedelta(minutes=1))
    _finished_ago(recent, dt.timedelta(minutes=11))
    with transaction() as session:  # no editor: nobody to report to
        assert reports_to_resend(session) == []
    make_staff(EDITOR)
    with transaction() as session:
        assert reports_to_resend(session) == [recent]

    with transaction() as session:
        [editor_id] = [u.id for u in accounts.editors(session)]
    claim = f"{HOLD_PREFIX}claim:{recent}:{editor_id}"
    get_redis().set(claim, "sending", ex=60)  # another task is mailing the editor now
    [mailed] = send_report_mails(recent, settings=get_settings())
    assert mailed.temporary and "another task" in mailed.result
    assert not clean.smtp.to(EDITOR)
    get_redis().delete(claim)

    clean.smtp.behaviour.add(EDITOR, "rcpt", "550 5.1.1 No such user")
    [mailed] = send_report_mails(recent, settings=get_settings())
    assert mailed.result.startswith("failed") and not mailed.temporary
    with transaction() as session:  # still unreported by the database alone...
        assert reports_to_resend(session) == [recent]
    assert requeue_lost_reports() == 0  # ...but the refusal holds it for the window


def test_a_cancelled_editions_figures_are_kept_once_its_last_messages_had_time(clean) -> None:
    from mailer.config import get_settings
    from mailer.delivery import service as sending
    from mailer.editions.models import Edition
    from mailer.insight.editions import edition_figures
    from mailer.insight.models import EditionSummary

    make_subscribers(2)
    edition_id = make_edition(articles=1)
    with transaction() as session:  # cancelled before any worker (the session's) can send
        sending.start_send(session, edition_id, by="test", settings=get_settings())
        sending.cancel(session, edition_id, by="test")
    with transaction() as session:
        figures = edition_figures(session, edition_id)
        assert figures is not None and figures.states == {"cancelled": 2}
    with transaction() as session:  # a message under way at the cancel may still end
        assert session.get(EditionSummary, edition_id) is None
        session.get(Edition, edition_id).finished_at = utcnow() - dt.timedelta(hours=2)
    with transaction() as session:
        edition_figures(session, edition_id)
    with transaction() as session:
        assert session.get(EditionSummary, edition_id) is not None


def test_a_past_week_is_counted_once_and_kept(clean) -> None:
    import datetime as dt

    from sqlalchemy import delete

    from mailer.db import utcnow
    from mailer.insight.growth import list_figures
    from mailer.insight.models import ListWeek

    make_subscribers(1)
    now = utcnow()
    with transaction() as session:
        reader = session.scalars(select(Subscriber)).one()
        for at in (now - dt.timedelta(days=7), now):  # last week, this week
            session.add(ConsentEvent(subscriber_id=reader.id, address_hash=reader.address_hash,
                                     kind="confirmed", at=at))
    with transaction() as session:
        weeks = list_figures(session, 3, now=now).weeks
    assert [w.confirmed for w in weeks] == [0, 1, 1]
    with transaction() as session:
        assert len(session.scalars(select(ListWeek)).all()) == 2  # the weeks that are over
        # An erasure deletes the reader's events: the week that is over keeps its count.
        session.execute(delete(ConsentEvent))
        session.add(ConsentEvent(subscriber_id=reader.id, address_hash=reader.address_hash,
                                 kind="unsubscribed", channel="link", at=now))
    with transaction() as session:
        figures = list_figures(session, 3, now=now)
    assert [w.confirmed for w in figures.weeks] == [0, 1, 0]  # this week: counted afresh
    assert figures.weeks[-1].unsubscribed == {"link": 1} and figures.channels == ["link"]


def test_a_csv_cell_is_never_run_as_a_formula() -> None:
    table = Table("t", "T", ["label", "n"], [["=HYPERLINK(\"x\")", 1], ["plain", 2]])
    assert table.csv() == "label,n\r\n\"'=HYPERLINK(\"\"x\"\")\",1\r\nplain,2\r\n"


def test_a_chart_escapes_its_labels_and_carries_no_script() -> None:
    svg = str(charts.bars("<b>", ["<script>alert(1)</script>", "b"], [[3, 1]]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    line = str(charts.lines("t", ["a", "b", "c"], [[0, 5, 2], [1, 1, 1]], ["x", "y"]))
    assert line.count("<polyline") == 2 and "style=" not in line
    assert "Nothing to show" in str(charts.bars("t", [], [[]]))


def test_a_line_over_time_is_as_long_as_the_time_it_pictures() -> None:
    from mailer.web.admin.insight import _over_time

    minutes = Table("m", "Per minute", ["minute", "a", "b"],
                    [["2026-12-03 09:14", 2, 0], ["2026-12-03 09:17", 1, 4]])
    title, labels, series = _over_time(minutes)
    assert (title, labels) == ("Per minute", ["09:14", "09:15", "09:16", "09:17"])
    assert series == [[2, 0, 0, 1], [0, 0, 0, 4]]
    # retries that came back the next day and a week later: per hour, the date written
    later = Table("m", "Per minute", ["minute", "a"],
                  [["2026-12-03 09:14", 2], ["2026-12-03 09:50", 1], ["2026-12-10 11:05", 3]])
    title, labels, series = _over_time(later)
    assert title == "Per minute, per hour" and len(labels) == 7 * 24 + 3
    assert (labels[0], labels[-1]) == ("12-03 09:00", "12-10 11:00")
    assert (series[0][0], series[0][-1], sum(series[0])) == (3, 3, 6)
    over_a_night = Table("m", "M", ["minute", "a"], [["2026-12-03 23:59", 1],
                                                     ["2026-12-04 00:01", 1]])
    assert _over_time(over_a_night)[1] == ["12-03 23:59", "12-04 00:00", "12-04 00:01"]
    assert _over_time(Table("m", "M", ["minute", "a"], []))[1:] == ([], [[]])


@pytest.mark.browser
def test_the_insight_pages_in_chromium_light_and_dark_at_375_px(
        clean, web, worker, browser, artifacts) -> None:
    make_subscribers(6, domains=3)
    edition_id = make_edition(articles=3)
    assert start(edition_id) == 6
    wait_sent(edition_id)
    html = parts(parse(clean.smtp.messages[0]))[1]
    tracked = [urlsplit(u).path for u in dict.fromkeys(TRACKED.findall(html))]
    for n, path in enumerate(tracked[:3]):
        for _ in range(3 - n):
            httpx.get(web.url + path, headers={"user-agent": BROWSER})
    tasks.publish(tasks.FLUSH_CLICKS, session=None)
    wait_for(lambda: _clicks(edition_id) == 6, what="the clicks' flush")
    make_staff(EDITOR)
    # Deferrals as a send counts them: five domains over three minutes (the three that
    # deferred most drawn, the other two summed).
    minute = utcnow().replace(second=0, microsecond=0)
    with transaction() as session:
        for k, (domain, n) in enumerate([("a.example", 9), ("b.example", 7), ("c.example", 5),
                                         ("d.example", 2), ("e.example", 1)]):
            for m in range(3):
                session.add(EditionDeferral(edition_id=edition_id, domain=domain, deferrals=n,
                                            minute=minute + dt.timedelta(minutes=m + k % 2)))

    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 375, "height": 800},
                                      color_scheme=scheme)
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error"
                and "Failed to load resource" not in m.text else None)
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{web.url}/admin/login")
        page.get_by_label("Email address").fill(EDITOR)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{web.url}/admin/editions")
        page.goto(f"{web.url}/admin/editions/{edition_id}")
        page.locator("#insight-link").click()
        page.wait_for_url(f"**/admin/editions/{edition_id}/insight")
        for name, path in (("edition", f"/admin/editions/{edition_id}/insight"),
                           ("list", "/admin/insight/list"),
                           ("deliverability", "/admin/insight/deliverability")):
            page.goto(web.url + path)
            assert page.locator("svg.chart").first.is_visible()
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 375, f"{name} is {wide} px wide at 375 px ({scheme})"
            # The chart's text takes the page's colour: light text on the dark page.
            ink = page.evaluate("getComputedStyle(document.querySelector("
                                "'svg.chart text')).fill")
            light_ink = _brightness(ink) > 128
            assert light_ink == (scheme == "dark"), (name, scheme, ink)
            page.screenshot(path=str(artifacts / f"insight-{name}-{scheme}-375-"
                                                 f"{clean.backend}.png"), full_page=True)
            if name == "edition":  # how the send went over time: accepted and refused
                over_time = page.locator("#chart-per-minute")
                assert over_time.locator("svg.chart polyline.line").count() == 2
                assert over_time.locator("th").all_text_contents() == [
                    "minute", "messages", "refused"]
                over_time.screenshot(path=str(artifacts / f"insight-over-time-{scheme}-375-"
                                                          f"{clean.backend}.png"))
                deferring = page.locator("#chart-deferrals-per-minute")
                assert deferring.locator("svg.chart polyline.line").count() == 4
                assert deferring.locator("th").all_text_contents() == [
                    "minute", "a.example", "b.example", "c.example", "(other domains)"]
                # Minute by minute, b and d.example deferred a minute after the others.
                assert [deferring.locator("tbody tr").nth(i).locator("td")
                        .all_text_contents()[1:] for i in range(4)] == [
                    ["9", "0", "5", "1"], ["9", "7", "5", "3"], ["9", "7", "5", "3"],
                    ["0", "7", "0", "2"]]
                deferring.screenshot(path=str(artifacts / f"insight-deferrals-{scheme}-375-"
                                                          f"{clean.backend}.png"))
        assert problems == []  # no CSP violation, no script error
        context.close()


def _brightness(color: str) -> float:
    red, green, blue = (int(n) for n in re.findall(r"\d+", color)[:3])
    return 0.299 * red + 0.587 * green + 0.114 * blue


def _clicks(edition_id: int) -> int:
    with transaction() as session:
        return sum(session.scalars(select(EditionLink.clicks)
                                   .where(EditionLink.edition_id == edition_id)))
