"""``mailer suppressions list|add|remove``: the list, its reasons and evidence, and the
consent events every change writes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mailer import privacy
from mailer.cli import app
from mailer.db import transaction
from mailer.subscribers.addresses import key_hash
from mailer.subscribers.records import find
from mailer.suppression.service import is_suppressed, suppress
from tests.support.bounce_mail import events_of, make_reader, suppressed

runner = CliRunner()


def mailer(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_add_list_remove_with_reason_evidence_and_consent_events(clean) -> None:
    reader = make_reader("Anna.Schmidt@example.org")

    added = mailer("suppressions", "add", "anna.schmidt@EXAMPLE.org", "--reason", "manual",
                   "--evidence", "asked by phone, ticket 4711")
    assert added.exit_code == 0, added.output
    assert "suppressed anna.schmidt@EXAMPLE.org (manual)" in added.output
    row = suppressed("Anna.Schmidt@example.org")
    assert row is not None and row.reason == "manual"
    assert row.evidence == "asked by phone, ticket 4711" and row.created_by.startswith("cli")

    again = mailer("suppressions", "add", "Anna.Schmidt@example.org")
    assert again.exit_code == 0 and "already suppressed (manual since" in again.output

    listed = mailer("suppressions", "list", "--format", "json")
    [entry] = [json.loads(line) for line in listed.output.splitlines()]
    assert entry["email"] == "Anna.Schmidt@example.org"
    assert entry["reason"] == "manual" and entry["evidence"] == "asked by phone, ticket 4711"
    table = mailer("suppressions", "list")
    assert "Anna.Schmidt@example.org" in table.output and "1 suppressed" in table.output

    removed = mailer("suppressions", "remove", "anna.schmidt@example.org")
    assert removed.exit_code == 0 and "(was: manual)" in removed.output
    assert suppressed("Anna.Schmidt@example.org") is None
    assert mailer("suppressions", "list", "--format", "json").output == ""

    kinds = [(e.kind, (e.detail or {}).get("reason")) for e in events_of(reader)]
    assert kinds == [("suppressed", "manual"), ("unsuppressed", "manual")]


def test_an_address_that_is_no_subscriber_can_be_suppressed(clean) -> None:
    result = mailer("suppressions", "add", "stranger@example.net", "--reason", "complaint",
                    "--evidence", "complained to our postmaster")
    assert result.exit_code == 0
    with transaction() as session:
        assert is_suppressed(session, key_hash("Stranger@Example.NET"))
    [entry] = [json.loads(line) for line in
               mailer("suppressions", "list", "--reason", "complaint", "--format", "json")
               .output.splitlines()]
    assert entry["email"] == "" and entry["address_hash"] == key_hash("stranger@example.net")
    assert mailer("suppressions", "list", "--reason", "manual", "--format", "json").output == ""


def test_bad_input_is_refused_clearly_and_changes_nothing(clean) -> None:
    bad_address = runner.invoke(app, ["suppressions", "add", "not an address"])
    assert bad_address.exit_code == 2 and "not a valid email address" in bad_address.output
    bad_reason = runner.invoke(app, ["suppressions", "add", "a@example.org", "--reason", "whim"])
    assert bad_reason.exit_code == 2 and "--reason must be one of" in bad_reason.output
    assert suppressed("a@example.org") is None
    absent = runner.invoke(app, ["suppressions", "remove", "a@example.org"])
    assert absent.exit_code == 1 and "not on the suppression list" in absent.output


def test_an_erasure_is_lifted_only_with_force_and_by_its_hash(clean) -> None:
    make_reader("gone@example.org")
    with transaction() as session:
        hash_ = privacy.erase(session, find(session, "gone@example.org"), by="test")
    [entry] = [json.loads(line) for line in
               mailer("suppressions", "list", "--format", "json").output.splitlines()]
    assert entry == {**entry, "email": "", "reason": "erased", "address_hash": hash_}

    refused = runner.invoke(app, ["suppressions", "remove", hash_])
    assert refused.exit_code == 1 and "--force" in refused.output
    assert suppressed("gone@example.org") is not None

    forced = mailer("suppressions", "remove", hash_, "--force")
    assert forced.exit_code == 0 and suppressed("gone@example.org") is None


def test_the_cli_changes_are_in_the_audit_log_the_systems_are_not(clean) -> None:
    from sqlalchemy import select

    from mailer.staff.models import AuditEntry

    def audit() -> list[tuple[str, str, str]]:
        with transaction() as session:
            return [(a.actor, a.action, a.target) for a in session.scalars(
                select(AuditEntry).order_by(AuditEntry.id))]

    reader = make_reader("audited@example.org")
    assert mailer("suppressions", "add", "audited@example.org").exit_code == 0
    assert mailer("suppressions", "remove", "audited@example.org").exit_code == 0
    assert mailer("suppressions", "add", "nobody@example.net").exit_code == 0
    assert mailer("subscribers", "erase", "audited@example.org", "--yes").exit_code == 0
    entries = audit()
    assert [(action, target) for _, action, target in entries] == [
        ("suppression.add", f"subscriber:{reader}"),
        ("suppression.remove", f"subscriber:{reader}"),
        ("suppression.add", f"address:{key_hash('nobody@example.net')[:16]}"),
        ("subscriber.erase", f"subscriber:{reader}"),
    ]
    assert all(actor.startswith("cli") for actor, _, _ in entries)

    make_reader("bounced@example.org")
    with transaction() as session:  # as a hard bounce does it: the system's own account
        suppress(session, key_hash("bounced@example.org"), reason="hard_bounce")
    assert suppressed("bounced@example.org") is not None and len(audit()) == 4
