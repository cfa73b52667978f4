"""One set of send checks: the admin's confirmation page, its send button and ``mailer
editions send`` refuse for the same reasons, in the same words, and change nothing; and an
edit or a send made from the CLI is in the audit log as one made in the admin is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from mailer.bounces.actions import record_bounce
from mailer.bounces.models import BounceClass
from mailer.cli import app
from mailer.config import IdentitySettings, get_settings
from mailer.db import transaction
from mailer.deliveries.models import Delivery
from mailer.delivery import service as sending
from mailer.delivery.preflight import Check, preflight
from mailer.editions import service as editions
from mailer.editions.models import Edition
from mailer.staff.models import AuditEntry
from tests.support.admin import Admin, flash_of, make_staff
from tests.support.factories import (
    BOUNCES,
    edition_state,
    make_articles,
    make_edition,
    make_subscribers,
)
from tests.support.factories import start as start_send

IDENTITY = IdentitySettings()  # the association as the tests' stack has it
EDITOR = "editor@cep-probation.example.org"
runner = CliRunner()


@pytest.fixture
def desk(rig, web) -> Iterator[Admin]:  # type: ignore[no-untyped-def]
    make_staff(EDITOR, "editor")
    admin = Admin(web.url)
    assert admin.login(EDITOR).status_code == 303
    yield admin
    admin.close()


def mailer(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def words(text: str) -> str:
    """The text with its line breaks and runs of spaces as single spaces (rich wraps)."""
    return " ".join(text.split())


def checks_of(edition_id: int) -> list[Check]:
    with transaction() as session:
        return [p.check for p in preflight(session, session.get(Edition, edition_id),
                                            settings=get_settings()).problems]


def deliveries(edition_id: int) -> int:
    with transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Delivery)
                                  .where(Delivery.edition_id == edition_id)) or 0)


def refused_alike(desk: Admin, edition_id: int, check: Check, said: str) -> None:
    """The web and the CLI both refuse ``edition_id`` for ``check``, saying ``said``."""
    before = edition_state(edition_id)
    assert check in checks_of(edition_id)

    page = words(desk.get(f"/admin/editions/{edition_id}/send").text)
    assert "cannot be sent now" in page and "Send to" not in page
    assert f'data-check="{check}"' in page and said.lower() in page.lower()

    posted = desk.post(f"/admin/editions/{edition_id}/send", {"confirm": "yes"})
    flash = words(flash_of(desk.follow(posted).text))
    assert flash.startswith("error: Not sent:") and said.lower() in flash.lower()

    cli = mailer("editions", "send", str(edition_id), "--yes")
    assert cli.exit_code == 1
    assert "Not sent:" in cli.output and said.lower() in words(cli.output).lower()

    assert edition_state(edition_id) == before and deliveries(edition_id) == 0


def test_an_edition_without_articles_is_refused_alike(desk) -> None:
    make_subscribers(3)
    make_articles(2)
    with transaction() as session:
        edition_id = editions.draft_edition(
            session, identity=IDENTITY, window_start=dt.datetime(2001, 1, 1, tzinfo=dt.UTC),
            window_end=dt.datetime(2001, 2, 1, tzinfo=dt.UTC), by="test").id
    refused_alike(desk, edition_id, Check.content, "has no articles")


def test_nobody_to_send_to_is_refused_alike(desk) -> None:
    make_subscribers(2, status="pending")
    edition_id = make_edition()
    refused_alike(desk, edition_id, Check.audience, "nobody would receive it")


def test_a_cancelled_edition_is_refused_alike(desk) -> None:
    make_subscribers(2)
    edition_id = make_edition()
    with transaction() as session:
        sending.cancel(session, edition_id, by="test")
    refused_alike(desk, edition_id, Check.state,
                  "is cancelled; only a draft or a scheduled edition can be sent")


def test_a_complaint_hold_is_refused_alike_until_acknowledged(desk) -> None:
    make_subscribers(300)
    first = make_edition()
    start_send(first)
    with transaction() as session:  # as if the send had gone out, with one complaint
        session.execute(update(Delivery).values(state="sent"))
        sending.finish_if_done(session, first)
        delivery = session.scalars(select(Delivery).order_by(Delivery.id)).first()
        record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.complaint, source="arf",
                      delivery_id=delivery.id, attribution="verp", fingerprint="c1")
    second = make_edition(subject="Next edition")
    refused_alike(desk, second, Check.complaints, "complaint rate of 0.33 %")

    acknowledged = mailer("editions", "acknowledge", str(first))
    assert acknowledged.exit_code == 0, acknowledged.output
    assert checks_of(second) == []
    page = desk.get(f"/admin/editions/{second}/send").text
    assert "to 299 readers now?" in page  # the complainer is unsubscribed and suppressed


def test_a_send_already_under_way_is_not_started_again(desk) -> None:
    make_subscribers(4)
    edition_id = make_edition()
    assert start_send(edition_id) == 4
    assert checks_of(edition_id) == [Check.started]
    again = mailer("editions", "send", str(edition_id), "--yes")
    assert again.exit_code == 0 and "nothing new is queued" in again.output
    assert deliveries(edition_id) == 4


# --- the CLI's changes are audited ------------------------------------------------------------


def audit_of(edition_id: int) -> list[tuple[str, str]]:
    with transaction() as session:
        return [(a.actor, a.action) for a in session.scalars(
            select(AuditEntry).where(AuditEntry.target == f"edition:{edition_id}")
            .order_by(AuditEntry.id))]


def test_edits_and_a_send_from_the_cli_are_audited(rig) -> None:
    make_subscribers(3)
    edition_id = make_edition(articles=4)
    with transaction() as session:
        first, second = [link.article_id for link in
                         session.get(Edition, edition_id).articles][:2]
    for args in (["edit", str(edition_id), "--subject", "Edited from the shell"],
                 ["edit", str(edition_id), "--since", "2001-01-01"],
                 ["drop", str(edition_id), str(first)],
                 ["add", str(edition_id), str(first)],
                 ["move", str(edition_id), str(second), "1"],
                 ["send", str(edition_id), "--yes"]):
        result = mailer("editions", *args)
        assert result.exit_code == 0, (args, result.output)
    entries = audit_of(edition_id)
    assert [action for _, action in entries] == [
        "edition.edit", "edition.window", "edition.article.drop", "edition.article.add",
        "edition.article.move", "edition.send"]
    assert all(actor.startswith("cli:") or actor == "cli" for actor, _ in entries)
    with transaction() as session:
        sent = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "edition.send",
            AuditEntry.target == f"edition:{edition_id}")).one()
        edit = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "edition.edit",
            AuditEntry.target == f"edition:{edition_id}")).one()
    assert sent.detail == {"audience": 3}
    assert edit.detail is not None and edit.detail["subject"] == "Edited from the shell"


def test_a_refused_cli_edit_leaves_no_audit_entry(clean) -> None:
    edition_id = make_edition()
    with transaction() as session:
        sending.cancel(session, edition_id, by="test")
    result = mailer("editions", "edit", str(edition_id), "--subject", "Too late")
    assert result.exit_code == 1
    assert [a for _, a in audit_of(edition_id)] == ["edition.cancel"]
