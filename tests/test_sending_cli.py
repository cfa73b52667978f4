"""The staff's commands for a send, run as real processes: send, test, pause, resume, cancel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from mailer.db import transaction
from mailer.deliveries.models import Delivery
from tests.conftest import wait_for
from tests.support.factories import edition_state, make_edition, make_subscribers
from tests.support.mail import parse

MAILER = str(Path(sys.executable).parent / "mailer")


def run(rig, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([MAILER, *args], env={**rig.stack.env, **rig.env}, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_send_asks_first_then_sends_and_reports_progress(rig) -> None:
    make_subscribers(30)
    edition_id = make_edition()
    rig.worker()
    refused = run(rig, "editions", "send", str(edition_id), stdin="n\n")
    assert refused.returncode != 0
    assert "30 confirmed reader(s)" in refused.stdout
    assert edition_state(edition_id) == "draft"

    sent = run(rig, "editions", "send", str(edition_id), "--yes")
    assert sent.returncode == 0, sent.stderr
    assert "Sending to 30 reader(s)" in sent.stdout
    wait_for(lambda: edition_state(edition_id) == "sent", what="the send")
    progress = json.loads(run(rig, "editions", "progress", str(edition_id), "--json").stdout)
    assert progress["state"] == "sent" and progress["counts"]["sent"] == 30
    assert progress["done"] == 30 and progress["remaining"] == 0
    again = run(rig, "editions", "send", str(edition_id), "--yes")
    assert again.returncode == 0  # idempotent: nothing new is queued
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 30


def test_a_test_copy_is_marked_and_not_counted(rig) -> None:
    make_subscribers(3)
    edition_id = make_edition()
    result = run(rig, "editions", "test", str(edition_id), "--to", "editor@cep.example.org",
                 "--to", "not an address")
    assert result.returncode == 1  # one of the two could not be sent
    assert "editor@cep.example.org: sent: 250" in result.stdout
    assert "not an address: not sent" in result.stdout
    [mail] = rig.stack.smtp.to("editor@cep.example.org")
    msg = parse(mail)
    assert msg["Subject"].startswith("[TEST] ")
    assert mail.mail_from.startswith("bounces+t")
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
    assert edition_state(edition_id) == "draft"


def test_schedule_pause_resume_cancel_from_the_command_line(rig) -> None:
    make_subscribers(5)
    edition_id = make_edition()
    past = run(rig, "editions", "send", str(edition_id), "--yes", "--at", "2001-01-01T09:00")
    assert past.returncode == 1 and "in the past" in past.stderr
    scheduled = run(rig, "editions", "send", str(edition_id), "--yes", "--at", "2099-01-06T09:00")
    assert scheduled.returncode == 0, scheduled.stderr
    assert edition_state(edition_id) == "scheduled"
    not_sending = run(rig, "editions", "pause", str(edition_id))
    assert not_sending.returncode == 1 and "only a sending edition pauses" in not_sending.stderr
    assert run(rig, "editions", "cancel", str(edition_id)).returncode == 0
    assert edition_state(edition_id) == "cancelled"
    assert run(rig, "editions", "resume", str(edition_id)).returncode == 1
