"""One time format everywhere people read times: the association's zone, 24 hours, the zone
named ("3 March 2026, 09:00 CET"), and a window shown with the last day it includes. The
formatting itself, then what the command line and the mail to editors say (the admin's
pages are in test_staff_views.py, the progress page's script in test_ui_browser.py)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailer import localtime
from mailer.config import IdentitySettings, get_settings
from mailer.db import transaction
from mailer.editions import service
from mailer.editions.review_mail import send_review_mails
from mailer.subscribers.addresses import key_hash
from mailer.suppression.service import suppress
from tests.conftest import wait_for
from tests.support.admin import make_staff
from tests.support.factories import make_articles, make_edition
from tests.support.mail import parse, parts

IDENTITY = IdentitySettings()  # the association as the tests' stack has it
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
UTC = dt.UTC
TIME = re.compile(r"\d{1,2} [A-Z][a-z]+ \d{4}, \d\d:\d\d CES?T")


def test_times_and_dates_read_the_same_everywhere() -> None:
    zone = IDENTITY.zone  # Europe/Amsterdam, the default
    assert localtime.format_time(dt.datetime(2026, 3, 3, 8, 0, tzinfo=UTC), zone=zone) == \
        "3 March 2026, 09:00 CET"
    assert localtime.format_time(dt.datetime(2026, 7, 1, 19, 5, 9, tzinfo=UTC), zone=zone,
                                 seconds=True) == "1 July 2026, 21:05:09 CEST"
    assert localtime.format_time(None, zone=zone) == ""
    assert localtime.format_clock(dt.datetime(2026, 3, 3, 13, 4, 5, tzinfo=UTC), zone=zone) == \
        "14:04:05 CET"
    # Midnight in Amsterdam is still the day before in UTC: the date is Amsterdam's.
    assert localtime.format_date(dt.datetime(2025, 12, 31, 23, 30, tzinfo=UTC), zone=zone) == \
        "1 January 2026"
    assert localtime.format_date(dt.date(2026, 5, 9), zone=zone) == "9 May 2026"


def test_a_window_shows_the_last_day_it_includes() -> None:
    december = (dt.datetime(2025, 12, 1, tzinfo=AMSTERDAM), dt.datetime(2026, 1, 1,
                                                                         tzinfo=AMSTERDAM))
    assert localtime.window_label(*december, zone=AMSTERDAM) == \
        "1 December 2025 – 31 December 2025"
    assert localtime.last_day(december[1], zone=AMSTERDAM) == dt.date(2025, 12, 31)
    # A window that ends during a day (the scheduled draft's "up to now") includes that day.
    until_nine = dt.datetime(2026, 3, 3, 9, tzinfo=AMSTERDAM)
    assert localtime.window_label(dt.datetime(2026, 1, 3, 9, tzinfo=AMSTERDAM), until_nine,
                                  zone=AMSTERDAM) == "3 January 2026 – 3 March 2026"


def test_a_zone_without_an_abbreviation_is_named_by_its_offset() -> None:
    sao_paulo = IdentitySettings(timezone="America/Sao_Paulo").zone  # MAILER_TIMEZONE
    assert localtime.format_time(dt.datetime(2026, 3, 3, 12, tzinfo=UTC), zone=sao_paulo) == \
        "3 March 2026, 09:00 UTC-03"


def _mailer(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "mailer"), *args]
    return subprocess.run(command, env={**env, "COLUMNS": "200"}, capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_the_command_line_writes_times_one_way(clean, tmp_path) -> None:
    edition_id = make_edition()
    scheduled = _mailer(clean.env, "editions", "send", str(edition_id), "--yes",
                        "--at", "2099-01-06T09:00", cwd=tmp_path)
    assert scheduled.returncode == 0, scheduled.stderr
    assert "It will go to 0 confirmed reader(s) on 6 January 2099, 09:00 CET." in \
        scheduled.stdout
    assert "Scheduled for 6 January 2099, 09:00 CET; beat starts it then." in scheduled.stdout
    shown = _mailer(clean.env, "editions", "show", str(edition_id), cwd=tmp_path)
    assert "Goes out: 6 January 2099, 09:00 CET" in shown.stdout

    make_staff("anna@example.org")
    from mailer.staff import accounts

    with transaction() as session:
        accounts.authenticate(session, email="anna@example.org",
                              password="a long enough test password", ip="192.0.2.1")
        suppress(session, key_hash("gone@example.org"), reason="manual")
    staff = _mailer(clean.env, "staff", "list", cwd=tmp_path)
    assert staff.returncode == 0, staff.stderr
    assert TIME.search(staff.stdout), staff.stdout

    table = _mailer(clean.env, "suppressions", "list", cwd=tmp_path)
    assert TIME.search(table.stdout) and not re.search(r"\d{4}-\d\d-\d\dT", table.stdout)
    # Output for machines keeps ISO 8601.
    [row] = [json.loads(line) for line in _mailer(
        clean.env, "suppressions", "list", "--format", "json", cwd=tmp_path).stdout.splitlines()]
    assert dt.datetime.fromisoformat(row["since"]).tzinfo is not None

    make_articles(2)
    articles = _mailer(clean.env, "articles", "list", cwd=tmp_path)
    assert TIME.search(articles.stdout) and "/20" not in articles.stdout

    for output in (scheduled.stdout, shown.stdout, staff.stdout, table.stdout, articles.stdout):
        assert not re.search(r"\d\d?:\d\d\s?(AM|PM)", output)
        assert not re.search(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d", output)


def test_the_mail_to_editors_shows_the_window_with_its_last_day(clean) -> None:
    make_staff("anna.editor@example.org", "editor")
    make_articles(2)
    with transaction() as session:
        # A December edition, its window stored as [1 December, 1 January).
        edition = service.draft_edition(
            session, identity=IDENTITY, window_start=dt.datetime(2025, 12, 1, tzinfo=AMSTERDAM),
            window_end=dt.datetime(2026, 1, 1, tzinfo=AMSTERDAM), by="test")
        edition_id = edition.id
    assert [m.result for m in send_review_mails(edition_id, settings=get_settings())] == ["sent"]
    [mail] = wait_for(lambda: clean.smtp.messages, what="the review mail")
    text, html = parts(parse(mail))
    for body in (text, " ".join(html.split())):
        assert "published 1 December 2025 – 31 December 2025" in body
        assert "1 January 2026" not in body


@pytest.mark.parametrize("template", ["confirm-subscription", "edition-ready"])
def test_the_footer_names_the_association_once(clean, template: str) -> None:
    from mailer.config import get_settings
    from mailer.emails.render import render_email

    settings = get_settings()
    context = {"settings": settings, "subscriber": {"first_name": "Maria"},
               "confirm_url": "https://example.org/confirm/x", "expires_days": 7,
               "edition": {"subject": "S"}, "articles": ["A"], "window": "w",
               "review_url": "https://example.org/admin/editions/1",
               "list_names": settings.identity.list_name}
    rendered = render_email(template, **context)
    for body in (rendered.text, rendered.html):
        footer = body[body.rindex("You get this mail" if template == "edition-ready"
                                  else "This email was sent"):]
        assert footer.count("Confederation of European Probation") == 1, footer
        assert settings.identity.postal_address in " ".join(footer.split())
