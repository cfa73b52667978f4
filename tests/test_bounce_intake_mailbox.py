"""Bounce mails from a mailbox (a real dovecot over IMAP and POP3) and from files
(``mailer bounces import``): the same intake, nothing lost, nothing taken twice."""

from __future__ import annotations

import mailbox
import os
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from mailer.bounces.mailbox import parse_mailbox_url, poll_configured, poll_imap, poll_pop3
from mailer.bounces.models import BounceClass
from mailer.cli import app
from mailer.config import BounceSettings
from tests.support.bounce_mail import (
    bounces,
    dsn,
    make_delivery,
    make_reader,
    make_sent_edition,
    plain_mail,
    suppressed,
    verp_of,
)
from tests.support.bounce_reading import OURS
from tests.support.dovecot import Dovecot
from tests.support.factories import stack_keys

CAP = 60_000


def limits() -> dict[str, Any]:
    """A small size cap, so that the mail over it is cheap to make; the stack's keys; the
    mailbox's own timeout."""
    return {"bounces": BounceSettings(bounce_max_bytes=CAP), "ours": OURS, "keys": stack_keys(),
            "timeout": 10.0}


@pytest.fixture
def dovecot(clean) -> Iterator[Dovecot]:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("the dovecot test server needs root to drop to its mail user")
    server = Dovecot().start()
    try:
        yield server
    finally:
        server.stop()


def three_mails() -> tuple[list[bytes], int]:
    """A hard bounce for a reader, a vacation reply, and a mail over the size cap."""
    reader = make_reader("gone@example.net")
    delivery = make_delivery(make_sent_edition(), reader)
    verp = verp_of(delivery)
    hard = dsn(to_verp=verp, recipients=[
        ("gone@example.net", "failed", "5.1.1", "550 5.1.1 <gone@example.net>: User unknown")])
    vacation = plain_mail(to=verp, subject="Automatic reply: CEP Newsletter",
                          body="I am on leave until Monday.",
                          headers={"Auto-Submitted": "auto-replied"})
    huge = plain_mail(to=verp, subject="Undelivered Mail Returned to Sender",
                      body="Delivery failed.\n" + ("y" * 76 + "\n") * (CAP // 70))
    return [hard, vacation, huge], reader


def test_imap_takes_every_message_in_and_moves_it_to_the_processed_folder(dovecot) -> None:
    mails, _ = three_mails()
    for raw in mails:
        dovecot.deliver(raw)

    found = poll_imap(dovecot.imap_url, **limits(), folder="INBOX",
                      processed_folder="Bounces/Processed")

    assert found.as_dict() == {"fetched": 3, "recorded": 3, "repeats": 0, "refused": 1}
    assert dovecot.messages("INBOX") == []
    # Written with "/", created in the server's own separator (Maildir++ uses ".").
    assert len(dovecot.messages("Bounces.Processed")) == 3
    classes = sorted(b.bounce_class for b in bounces())
    assert classes == sorted([BounceClass.hard, BounceClass.autoreply, BounceClass.unparsed])
    assert {b.source for b in bounces()} == {"imap"}
    refused = [b for b in bounces() if b.bounce_class == BounceClass.unparsed][0]
    assert "over the bounce size cap" in refused.diagnostic
    assert refused.raw_excerpt.startswith("From:") or "Subject:" in refused.raw_excerpt
    assert suppressed("gone@example.net").reason == "hard_bounce"

    again = poll_imap(dovecot.imap_url, **limits(), folder="INBOX",
                      processed_folder="Bounces/Processed")
    assert again.fetched == 0 and len(bounces()) == 3


def test_imap_without_a_processed_folder_deletes_and_a_crash_takes_nothing_twice(
        dovecot, tmp_path) -> None:
    mails, _ = three_mails()
    hard = mails[0]
    # As if a poll had committed this bounce and crashed before deleting the message.
    runner = CliRunner()
    dovecot.deliver(hard)
    eml = tmp_path / "hard.eml"
    eml.write_bytes(hard)
    assert runner.invoke(app, ["bounces", "import", str(eml)]).exit_code == 0
    assert len(bounces()) == 1

    found = poll_imap(dovecot.imap_url, **limits(), folder="INBOX", processed_folder=None)

    assert (found.fetched, found.recorded, found.repeats) == (1, 0, 1)
    assert dovecot.messages("INBOX") == [] and len(bounces()) == 1


def test_pop3_takes_in_and_deletes_including_long_lines(dovecot) -> None:
    mails, _ = three_mails()
    one_line_html = plain_mail(to="bounces+x@bounces.cep-probation.example.org",
                               subject="Re: newsletter", body="<p>" + "z" * 5000 + "</p>")
    for raw in [*mails, one_line_html]:
        dovecot.deliver(raw)

    found = poll_pop3(dovecot.pop3_url, **limits())

    assert found.as_dict() == {"fetched": 4, "recorded": 4, "repeats": 0, "refused": 1}
    assert dovecot.messages("INBOX") == []
    assert {b.source for b in bounces()} == {"pop3"}
    assert suppressed("gone@example.net") is not None


def test_the_beat_task_polls_what_the_settings_name(dovecot) -> None:
    mails, _ = three_mails()
    dovecot.deliver(mails[0])
    bounces_settings = BounceSettings(imap_url=dovecot.imap_url, imap_processed_folder="Done",
                                      pop3_url=dovecot.pop3_url, bounce_max_bytes=CAP)

    totals = poll_configured(bounces_settings, ours=OURS, keys=stack_keys(), timeout=10.0)

    # IMAP took the message (and moved it); POP3 sees the same INBOX, now empty.
    assert totals["imap_fetched"] == 1 and totals["pop3_fetched"] == 0
    assert len(dovecot.messages("Done")) == 1 and len(bounces()) == 1


def test_mailbox_urls() -> None:
    imap = parse_mailbox_url("imaps://bounce%40example.org:p%3Ass@imap.example.org")
    assert (imap.protocol, imap.host, imap.port, imap.tls) == ("imap", "imap.example.org", 993,
                                                                 "implicit")
    assert (imap.username, imap.password) == ("bounce@example.org", "p:ss")
    assert parse_mailbox_url("imap://u:p@imap.example.org").tls == "starttls"
    assert parse_mailbox_url("pop3://u:p@127.0.0.1").tls == "none"
    assert parse_mailbox_url("pop3s://u:p@pop.example.org").port == 995
    for bad in ("http://u:p@x", "imap://x.example.org", "imap://u:p@x?tls=maybe"):
        with pytest.raises(ValueError):
            parse_mailbox_url(bad)


def test_import_reads_eml_mbox_and_maildir_once(clean, tmp_path) -> None:
    reader = make_reader("gone@example.net")
    edition = make_sent_edition()
    raws = []
    for name in ("gone", "other1", "other2"):
        sub = reader if name == "gone" else make_reader(f"{name}@example.net")
        delivery = make_delivery(edition, sub)
        raws.append(dsn(to_verp=verp_of(delivery), recipients=[
            (f"{name}@example.net", "failed", "5.2.2", "552 5.2.2 Mailbox full")]))
    (tmp_path / "one.eml").write_bytes(raws[0])
    box = mailbox.mbox(tmp_path / "box.mbox")
    box.add(raws[1])
    box.flush()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    maildir.add(raws[2])
    runner = CliRunner()

    outputs = [runner.invoke(app, ["bounces", "import", str(p)]) for p in
               (tmp_path / "one.eml", tmp_path / "box.mbox", tmp_path / "Maildir")]

    assert [o.exit_code for o in outputs] == [0, 0, 0]
    assert all("1 messages: 1 bounces recorded" in o.output for o in outputs)
    assert sorted(b.recipient for b in bounces()) == ["gone@example.net", "other1@example.net",
                                                      "other2@example.net"]
    assert {b.source for b in bounces()} == {"import"}
    repeat = runner.invoke(app, ["bounces", "import", str(tmp_path / "box.mbox")])
    assert "0 bounces recorded, 1 already known" in repeat.output and len(bounces()) == 3
    missing = runner.invoke(app, ["bounces", "import", str(tmp_path / "nowhere.mbox")])
    assert missing.exit_code == 2
