"""``mailer subscribers import|export|show|erase``, run as the real command."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, inspect, select, text

from mailer.config import get_settings
from mailer.db import get_engine, transaction
from mailer.subscribers.addresses import key_hash
from mailer.subscribers.models import ConsentEvent, Subscriber, Suppression
from tests.support.factories import stack_keys
from tests.support.subscribers import (
    events,
    list_status,
    make,
    settle_confirmation_tasks,  # noqa: F401
    subscriber,
)

MAILER = str(Path(sys.executable).parent / "mailer")

OLD_SYSTEM = [  # the rows of a CSV file; line 1 is the header
    ["email", "first_name", "last_name", "organisation", "country", "consented_at"],
    ["anna@example.org", "Anna", "Schmidt", "Bewährungshilfe", "Germany", "2019-04-01"],
    ["not-an-address", "Bad", "Row", "", "", ""],
    ["ben@example.org", "Ben", "", "Probation Service", "Ireland", ""],
    ["ANNA@Example.org", "Anna", "Again", "", "", ""],
    ["erased@example.org", "Ernie", "", "", "", ""],
    ["left@example.org", "Lea", "", "", "", "2020-01-01"],
    ["cleo@example.org", 'Cleo "CJ"', "Jones", "Ministry of Justice, Prisons", "UK",
     "2021-06-30T09:30:00"],
    ["dora@example.org", "Dora", "", "", "", "last spring"],
    ["=cmd@example.org", "Formula", "", "", "", ""],
]


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MAILER, "subscribers", *args], env=env, capture_output=True,
                          text=True, input=stdin, timeout=120)


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(clean, tmp_path) -> None:
    make("left@example.org", "unsubscribed")  # left earlier: an import must not bring her back
    make("erased@example.org", "confirmed")
    assert run(clean.env, "erase", "--yes", "erased@example.org").returncode == 0
    source = tmp_path / "old-list.csv"
    source.write_text(_csv(OLD_SYSTEM), encoding="utf-8")

    result = run(clean.env, "import", str(source))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported 4, skipped 5"
    problems = {int(line.split(":")[0].split()[1]): line for line in result.stderr.splitlines()
                if line.startswith("line ")}
    assert sorted(problems) == [3, 5, 6, 7, 9]
    assert "not a valid email address" in problems[3]
    assert "duplicate of line 2" in problems[5]
    assert "suppression list" in problems[6]
    assert "already on the list (unsubscribed)" in problems[7]
    assert "not a date" in problems[9]
    assert "importing" in result.stderr  # the progress bar

    for address in ("anna@example.org", "ben@example.org", "cleo@example.org"):
        sub = subscriber(address)
        assert list_status(address) == "confirmed" and sub.source == "import:old-list.csv"
        assert events(sub.id) == ["imported"]
    cleo = subscriber("cleo@example.org")
    assert (cleo.first_name, cleo.organisation) == ('Cleo "CJ"', "Ministry of Justice, Prisons")
    assert list_status("left@example.org") == "unsubscribed"
    assert subscriber("erased@example.org") is None
    with transaction() as s:
        imported = s.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == subscriber("anna@example.org").id)).one()
    assert imported.source == "import:old-list.csv"
    assert imported.detail["line"] == 2 and imported.detail["consented_at"] == "2019-04-01"

    # Running it again imports nothing and changes nothing.
    again = run(clean.env, "import", str(source), "--source", "old CRM, 2019 form")
    assert again.stdout.strip() == "imported 0, skipped 9"
    assert "already on the list (confirmed)" in again.stderr


def test_import_refuses_a_file_it_cannot_read_and_imports_nothing(clean, tmp_path) -> None:
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("email,first_name\nfranz@example.org,Jürgen\n".encode("latin-1"))
    result = run(clean.env, "import", str(latin1))
    assert result.returncode == 2 and "not UTF-8" in result.stderr
    no_email = tmp_path / "no-email.csv"
    no_email.write_text("name,address\nFranz,franz@example.org\n")
    result = run(clean.env, "import", str(no_email))
    assert result.returncode == 2 and "'email' column" in result.stderr
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_import_survives_a_broken_csv_row(clean, tmp_path) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"email,first_name\nok1@example.org,A\nhuge@example.org,"
                       + b"x" * 200_000 + b"\nnul@example.org,B\x00C\nok2@example.org,D\n")
    result = run(clean.env, "import", str(broken))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported 3, skipped 1"
    assert "line 3: cannot be read as CSV: field larger than field limit" in result.stderr
    assert list_status("ok2@example.org") == "confirmed"
    assert subscriber("nul@example.org").first_name == "B C"  # no NUL reaches the database
    assert subscriber("huge@example.org") is None


def test_export_as_csv_and_json(clean) -> None:
    make("anna@example.org", "confirmed", first_name="Anna")
    make("=cmd@example.org", "pending", first_name="=HYPERLINK(\"http://x\")")
    make("gone@example.org", "unsubscribed")

    result = run(clean.env, "export")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["email"] for r in rows] == ["anna@example.org", "'=cmd@example.org",
                                          "gone@example.org"]
    assert rows[1]["first_name"].startswith("'=")  # no formula for the spreadsheet to run
    assert rows[0]["status"] == "confirmed" and rows[0]["confirmed_at"]

    result = run(clean.env, "export", "--format", "json", "--status", "confirmed")
    data = json.loads(result.stdout)
    assert [r["email"] for r in data] == ["anna@example.org"]
    assert data[0]["first_name"] == "Anna" and data[0]["status"] == "confirmed"

    assert json.loads(run(clean.env, "export", "--format", "json",
                          "--status", "pending").stdout)[0]["first_name"] == '=HYPERLINK("http://x")'
    bad = run(clean.env, "export", "--format", "xml")
    assert bad.returncode == 2 and "xml" in bad.stderr


def test_show_is_the_whole_consent_record_as_json(clean, web, worker) -> None:
    """The GDPR export: address, consent text and version, source, sign-up time + IP + UA,
    the confirmation mail's time and Message-ID, confirmation time + IP + UA, unsubscribe
    time and channel."""
    import httpx

    from tests.support.subscribers import confirmation_link, path

    client = httpx.Client(base_url=web.url)
    client.post("/subscribe", data={"email": "Gdpr@Example.org", "first_name": "Greta",
                                    "consent": "yes", "source": "website-embed"},
                headers={"User-Agent": "signup-agent"})
    link = confirmation_link(clean.smtp, "Gdpr@example.org")
    client.post(path(link), headers={"User-Agent": "confirm-agent"})
    sub = subscriber("gdpr@example.org")
    from mailer.subscribers.unsubscribe import unsubscribe_url

    httpx.post(unsubscribe_url(sub, base_url=get_settings().base_url, keys=stack_keys()),
               data={"List-Unsubscribe": "One-Click"})

    result = run(clean.env, "show", "GDPR@EXAMPLE.ORG")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["email"] == "Gdpr@example.org" and record["first_name"] == "Greta"
    [held] = record["subscriptions"]
    assert held["list"] == "newsletter" and held["status"] == "unsubscribed"
    assert held["confirmed_at"] and held["unsubscribed_at"] and held["topics"] == "all"
    history = {e["event"]: e for e in record["consent_history"]}
    assert list(history) == ["subscribed", "confirmation_sent", "confirmed", "unsubscribed"]
    signed_up = history["subscribed"]
    assert signed_up["ip"] == "127.0.0.1" and signed_up["user_agent"] == "signup-agent"
    assert signed_up["source"] == "website-embed" and signed_up["consent_version"]
    assert "unsubscribe at any time" in signed_up["consent_text"] and signed_up["at"]
    assert history["confirmation_sent"]["message_id"].startswith("<confirm.")
    assert history["confirmation_sent"]["at"]
    assert history["confirmed"]["user_agent"] == "confirm-agent"
    assert history["confirmed"]["ip"] == "127.0.0.1"
    assert history["unsubscribed"]["channel"] == "one-click" and history["unsubscribed"]["at"]
    assert {e.get("list") for e in record["consent_history"]} == {"newsletter"}

    missing = run(clean.env, "show", "nobody@example.org")
    assert missing.returncode == 1 and "no subscriber" in missing.stderr
    invalid = run(clean.env, "show", "not an address")
    assert invalid.returncode == 2 and "not a valid email address" in invalid.stderr


def test_erase_leaves_only_a_hash_that_keeps_imports_away(clean, tmp_path) -> None:
    sub = make("forget.me@example.org", "confirmed", first_name="Fiona")
    result = run(clean.env, "erase", "--yes", "Forget.Me@example.org")
    assert result.returncode == 0, result.stderr
    digest = key_hash("forget.me@example.org")
    assert digest in result.stdout

    assert subscriber("forget.me@example.org") is None
    with transaction() as s:
        [suppression] = s.scalars(select(Suppression)).all()
        [event] = s.scalars(select(ConsentEvent)).all()
    assert suppression.address_hash == digest and suppression.reason == "erased"
    assert event.kind == "erased" and event.subscriber_id is None and event.address_hash == digest
    assert event.ip is None and event.user_agent is None
    # Nothing anywhere in the database still names her.
    assert _database_mentions(["forget.me", "Fiona", sub.public_id]) == []

    # An import never brings her back.
    source = tmp_path / "again.csv"
    source.write_text("email\nFORGET.ME@example.org\n")
    result = run(clean.env, "import", str(source))
    assert result.stdout.strip() == "imported 0, skipped 1"
    assert "suppression list (erased)" in result.stderr

    # An address with no subscriber is still put on the list.
    result = run(clean.env, "erase", "--yes", "never.met@example.org")
    assert result.returncode == 0 and "no subscriber" in result.stdout
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(Suppression)) == 2
    assert _database_mentions(["never.met"]) == []


def test_erase_scrubs_the_evidence_of_an_earlier_suppression(clean) -> None:
    from mailer.suppression.service import suppress

    bounced = make("bounced@example.org", "confirmed")
    with transaction() as s:
        suppress(s, bounced.address_hash, reason="hard_bounce", by="bounces",
                 evidence="550 5.1.1 <bounced@example.org>: no such user")
    assert _database_mentions(["bounced@"]) != []  # the evidence names the address
    assert run(clean.env, "erase", "--yes", "bounced@example.org").returncode == 0
    assert _database_mentions(["bounced@"]) == []
    with transaction() as s:
        [suppression] = s.scalars(select(Suppression)).all()
    assert suppression.reason == "hard_bounce"  # still never mailed, for the same reason


def test_erase_asks_before_it_deletes(clean) -> None:
    make("careful@example.org", "confirmed")
    result = run(clean.env, "erase", "careful@example.org", stdin="n\n")
    assert result.returncode == 1
    assert subscriber("careful@example.org") is not None


def _database_mentions(needles: list[str]) -> list[tuple[str, str]]:
    """Every (table, column) whose text contains one of ``needles``, in any table."""
    engine = get_engine()
    found = []
    with engine.connect() as conn:
        inspector = inspect(conn)  # one connection: SQLite's write lock is taken per BEGIN
        for table in inspector.get_table_names():
            if table == "alembic_version":
                continue
            for column in inspector.get_columns(table):
                type_name = str(column["type"]).upper()
                if not any(t in type_name for t in ("CHAR", "TEXT", "JSON")):
                    continue
                for needle in needles:
                    value = f"%{needle.lower()}%"
                    hit = conn.execute(text(
                        f'SELECT 1 FROM "{table}" WHERE lower(CAST("{column["name"]}" AS TEXT)) '
                        "LIKE :v LIMIT 1"), {"v": value}).first()
                    if hit:
                        found.append((table, column["name"]))
    return found
