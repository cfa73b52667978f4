"""Forged bounces and complaints act on nobody; a genuine one acts, once (issue 9, part 1).

Tried as a stranger with a mail client would: mail to the real bounce server (started as
``mailer bounces serve`` is, its worker a real Celery process), to a real mailbox
(dovecot, over IMAP and over POP3, polled as the beat task polls it) and through
``mailer bounces import``:

- a DSN that only names a reader's address;
- DSNs quoting made-up Message-IDs: the sequential ids with the unkeyed digest the ids
  carried before they were signed, and without any digest;
- a forged ARF complaint quoting such a Message-ID;
- a genuine DSN and a genuine complaint (signed VERP token), each replayed byte for byte
  and re-sent with a new Message-ID and Date.

Only the genuine ones act, once; the forged complaint raises no complaint rate and holds
no send. Each forged one is kept as unverified evidence naming the reader, and counted
in /metrics.
"""

from __future__ import annotations

import hashlib
import os
import smtplib
from collections.abc import Callable, Iterator
from email.utils import format_datetime, make_msgid

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from mailer.bounces.actions import alert_counts, soft_bounce_count
from mailer.bounces.mailbox import poll_imap, poll_pop3
from mailer.bounces.models import InboundMessage
from mailer.bounces.rates import edition_rates
from mailer.cli import app
from mailer.config import IdentitySettings, get_settings
from mailer.db import transaction, utcnow
from mailer.delivery import service as sending
from mailer.editions.models import Edition
from mailer.ops.metrics import render
from tests.conftest import wait_for
from tests.support.bounce_mail import (
    arf,
    bounces,
    dsn,
    events_of,
    make_delivery,
    make_reader,
    make_sent_edition,
    newsletter_id,
    original_headers,
    status_of,
    suppressed,
    verp_of,
)
from tests.support.bounce_reading import OURS
from tests.support.dovecot import Dovecot
from tests.support.factories import BOUNCES, stack_keys
from tests.test_bounce_intake_server import bounce_server  # noqa: F401 - a fixture

IDENTITY = IdentitySettings()  # the stack's sending and bounce domains (the defaults)
SENDING_DOMAIN = "cep-probation.example.org"


def old_style_id(edition_id: int, delivery_id: int) -> str:
    """The Message-ID as it was made before issue 9: an unkeyed digest of public data."""
    list_id = get_settings().identity.list_id
    digest = hashlib.sha256("\x00".join(["nl", str(edition_id), str(delivery_id), list_id])
                            .encode()).hexdigest()[:24]
    return f"<nl.{edition_id}.{delivery_id}.{digest}@{SENDING_DOMAIN}>"


def resent(raw: bytes) -> bytes:
    """The same DSN sent again with a new Message-ID and Date (a replay that is not
    byte-identical)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n")
             if not line.lower().startswith((b"message-id:", b"date:"))]
    lines += [f"Message-ID: {make_msgid(domain='mx.example.net')}".encode(),
              f"Date: {format_datetime(utcnow())}".encode()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


Deliver = Callable[[list[tuple[str, bytes]]], None]


@pytest.fixture(params=["mx", "imap", "pop3", "import"])
def route(request, clean) -> Iterator[Deliver]:  # type: ignore[no-untyped-def]
    """A way into the intake: mail to the bounce server, to the mailbox over IMAP or over
    POP3, or a file to ``mailer bounces import``. Takes (envelope recipient, raw message)
    pairs and returns once all of them were taken in."""
    if request.param == "mx":
        server = request.getfixturevalue("bounce_server")
        request.getfixturevalue("worker")

        def by_mx(mails: list[tuple[str, bytes]]) -> None:
            before = len(bounces())
            for envelope_to, raw in mails:
                with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
                    smtp.sendmail("", [envelope_to], raw)

            def drained() -> bool:
                with transaction() as session:
                    left = session.scalar(select(func.count()).select_from(InboundMessage))
                return left == 0 and len(bounces()) > before

            wait_for(drained, timeout=60, what="the worker's intake")

        yield by_mx
    elif request.param in ("imap", "pop3"):
        if os.geteuid() != 0:
            pytest.skip("the dovecot test server needs root to drop to its mail user")
        dovecot = Dovecot().start()

        def by_mailbox(mails: list[tuple[str, bytes]]) -> None:
            for _, raw in mails:
                dovecot.deliver(raw)
            if request.param == "imap":
                found = poll_imap(dovecot.imap_url, bounces=BOUNCES, keys=stack_keys(), ours=OURS,
                                  timeout=10.0, folder="INBOX", processed_folder=None)
            else:  # as the beat task polls MAILER_POP3_URL: take in, then delete
                found = poll_pop3(dovecot.pop3_url, bounces=BOUNCES, keys=stack_keys(), ours=OURS,
                                  timeout=10.0)
            assert found.fetched == len(mails)
            assert dovecot.messages() == []  # taken: nothing is left to be read twice

        try:
            yield by_mailbox
        finally:
            dovecot.stop()
    else:
        tmp = clean.tmp / "import"
        tmp.mkdir(exist_ok=True)

        def by_import(mails: list[tuple[str, bytes]]) -> None:
            for n, (_, raw) in enumerate(mails):
                path = tmp / f"{os.getpid()}-{len(bounces())}-{n}.eml"
                path.write_bytes(raw)
                result = CliRunner().invoke(app, ["bounces", "import", str(path)])
                assert result.exit_code == 0, result.output

        yield by_import


def sent_edition(names: list[str]) -> tuple[int, dict[str, tuple[int, int]]]:
    """An edition sent to one reader per name: (edition, {name: (subscriber, delivery)})."""
    edition = make_sent_edition()
    with transaction() as session:  # sent just now: what the complaint hold looks at
        session.get(Edition, edition).started_at = utcnow()
    readers = {}
    for name in names:
        sub = make_reader(f"{name}@example.net")
        readers[name] = (sub, make_delivery(edition, sub))
    return edition, readers


def test_forged_bounces_and_complaints_act_on_nobody(route: Deliver) -> None:
    edition, readers = sent_edition(["anna", "bert", "carla", "dirk", "emma", "fritz"])
    bounce_address = f"bounces@{get_settings().identity.bounce_domain}"
    fbl = f"fbl@{get_settings().identity.bounce_domain}"

    def dsn_about(name: str, status: str, diagnostic: str, msg_id: str = "") -> bytes:
        email = f"{name}@example.net"
        return dsn(to_verp=bounce_address, recipients=[(email, "failed", status, diagnostic)],
                   original=original_headers(email, msg_id) if msg_id else "")

    anna, bert, carla, dirk, emma, fritz = (readers[n] for n in readers)
    mails = [
        # The address alone, no token, no Message-ID of ours.
        (bounce_address, dsn_about("anna", "5.1.1", "550 5.1.1 User unknown")),
        # Made-up Message-IDs: sequential ids with the old unkeyed digest, and with none.
        (bounce_address, dsn_about("bert", "5.1.1", "550 5.1.1 User unknown",
                                   old_style_id(edition, bert[1]))),
        (bounce_address, dsn_about("dirk", "5.1.1", "550 5.1.1 User unknown",
                                   f"<nl.{edition}.{dirk[1]}@{SENDING_DOMAIN}>")),
        # A forged complaint quoting a made-up Message-ID of a real delivery.
        (fbl, arf(to=fbl, reported_rcpt="carla@example.net", original=original_headers(
            "carla@example.net", old_style_id(edition, carla[1])))),
        # Soft bounces by address toward the soft rule.
        (bounce_address, dsn_about("emma", "5.2.2", "552 5.2.2 Mailbox full")),
        # A policy rejection by address: would raise the operators' alert.
        (bounce_address, dsn_about("fritz", "5.7.1", "550 5.7.1 Message rejected as spam",
                                   old_style_id(edition, fritz[1]))),
    ]

    route(mails)

    recorded = bounces()
    assert len(recorded) == len(mails)
    assert {b.trust for b in recorded} == {"unverified"}
    assert {b.action for b in recorded} == {"nothing: unverified"}
    assert all(b.subscriber_id is None and b.edition_id is None and b.delivery_id is None
               for b in recorded)
    # Each names the reader it would have hit, and says why it was not believed.
    assert {b.claimed_subscriber_id for b in recorded} == {r[0] for r in readers.values()}
    reasons = sorted(b.unverified_reason for b in recorded)
    assert reasons == sorted(["no-token", "forged-message-id", "forged-message-id",
                              "forged-message-id", "no-token", "forged-message-id"])
    # 0 suppressed, 0 unsubscribed, 0 counted, no consent event, no alert, no hold.
    for name, (sub, _) in readers.items():
        assert suppressed(f"{name}@example.net") is None, name
        assert status_of(sub) == "confirmed" and events_of(sub) == [], name
    with transaction() as session:
        assert soft_bounce_count(session, emma[0], BOUNCES) == 0
        rates = edition_rates(session, edition, get_settings().sending)
        assert (rates["complaints"], rates["complaint_rate"], rates["hard"],
                rates["policy"]) == (0, 0.0, 0, 0)
        assert sending.complaint_hold(session, sending=get_settings().sending) is None
    assert alert_counts() == {} and alert_counts(edition) == {}
    metrics = render(get_settings()).decode()
    assert 'mailer_bounces_unverified_total{reason="forged-message-id"} 4.0' in metrics
    assert 'mailer_bounces_unverified_total{reason="no-token"} 2.0' in metrics
    assert "mailer_bounces_unverified_pending 6.0" in metrics


def test_a_genuine_bounce_and_complaint_act_once_however_often_they_come(
        route: Deliver) -> None:
    edition, readers = sent_edition(["gone", "angry", "fine1", "fine2", "fine3"])
    gone, angry = readers["gone"], readers["angry"]
    fbl = f"fbl@{get_settings().identity.bounce_domain}"

    hard = dsn(to_verp=verp_of(gone[1]), recipients=[
        ("gone@example.net", "failed", "5.1.1", "550 5.1.1 <gone@example.net>: User unknown")],
        original=original_headers(
            "gone@example.net", newsletter_id(edition, gone[1]),
            verp_of(gone[1])))
    complaint = arf(to=fbl, reported_rcpt="angry@example.net", original=original_headers(
        "angry@example.net", newsletter_id(edition, angry[1]),
        verp_of(angry[1])))

    route([(verp_of(gone[1]), hard), (fbl, complaint)])
    route([(verp_of(gone[1]), hard), (fbl, complaint),  # the same bytes again
           (verp_of(gone[1]), resent(hard)), (fbl, resent(complaint))])  # new id and date

    assert suppressed("gone@example.net").reason == "hard_bounce"
    assert suppressed("angry@example.net").reason == "complaint"
    assert [e.kind for e in events_of(gone[0])] == ["suppressed"]
    assert sorted(e.kind for e in events_of(angry[0])) == ["suppressed", "unsubscribed"]
    for name in ("fine1", "fine2", "fine3"):
        assert events_of(readers[name][0]) == []
    acted = [b for b in bounces() if not b.action.startswith("nothing")]
    assert sorted(b.action for b in acted) == ["suppressed", "unsubscribed and suppressed"]
    assert all(b.trust == "verified" and b.attribution == "verp" for b in acted)
    repeats = [b for b in bounces() if b.action.startswith("nothing: repeat of #")]
    # The byte-identical copies are known by their fingerprint (nothing recorded) on
    # every route; the re-sent ones are kept as repeats, tied to nobody.
    assert len(repeats) == 2 and all(b.subscriber_id is None for b in repeats)
    assert alert_counts(edition) == {"complaints": 1}
    with transaction() as session:
        rates = edition_rates(session, edition, get_settings().sending)
        assert (rates["hard"], rates["complaints"]) == (1, 1)
        # One complaint in five deliveries is far over the stop level: a genuine one holds.
        hold = sending.complaint_hold(session, sending=get_settings().sending)
        assert "complaint rate" in (hold or "")
    assert "mailer_bounces_unverified_pending 0.0" in render(get_settings()).decode()


def test_a_valid_token_in_a_dsn_about_another_readers_address_acts_on_nobody(clean) -> None:
    """A reader's genuine token (from a newsletter they forwarded, say) in a DSN naming
    someone else's address ties to nobody: it is not evidence about either of them."""
    from mailer.bounces.intake import receive

    _, readers = sent_edition(["holder", "victim"])
    holder = readers["holder"]
    raw = dsn(to_verp=verp_of(holder[1]), recipients=[
        ("victim@example.net", "failed", "5.1.1", "550 5.1.1 User unknown")])
    with transaction() as session:
        result = receive(session, raw=raw, ours=OURS, source="mx",
                         bounces=BOUNCES, keys=stack_keys(),
                         envelope_to=[verp_of(holder[1])])
    [row] = result.recorded
    assert (row.attribution, row.action) == ("none", "nothing: unverified")
    [bounce] = bounces()
    assert (bounce.unverified_reason, bounce.claimed_delivery_id) == ("other-recipient",
                                                                      holder[1])
    assert suppressed("victim@example.net") is None and suppressed("holder@example.net") is None
