"""The bounce server (``mailer bounces serve``), its spool and the worker behind it, end to
end: DSNs and complaints for a send come back over SMTP and the right readers end up
suppressed."""

from __future__ import annotations

import datetime as dt
import hashlib
import smtplib
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from mailer.bounces.models import Bounce, BounceClass, InboundMessage
from mailer.bounces.spool import process_spooled, spool_message
from mailer.config import BounceSettings, get_settings
from mailer.db import transaction, utcnow
from mailer.subscribers.addresses import key_hash
from mailer.suppression.service import is_suppressed
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
    verp_of,
)
from tests.support.bounce_reading import OURS
from tests.support.factories import BOUNCES, stack_keys
from tests.support.processes import BIN, Process, free_port


class BounceServer(Process):
    ready_text = "listening on"

    def __init__(self, env: dict[str, str], log, port: int) -> None:  # type: ignore[no-untyped-def]
        self.port = port
        super().__init__([str(BIN / "mailer"), "bounces", "serve", "--host", "127.0.0.1",
                          "--port", str(port)], env, log)


@pytest.fixture(scope="session")
def bounce_server(stack) -> BounceServer:  # type: ignore[no-untyped-def]
    server = BounceServer(stack.env, stack.tmp / "bounce-server.log", free_port())
    stack.processes.append(server)
    return server.start()  # type: ignore[return-value]


@pytest.fixture
def small_cap_server(clean) -> Iterator[int]:  # type: ignore[no-untyped-def]
    """The server in this process, with a 50 kB size cap."""
    from mailer.bounces.server import start

    port = free_port()
    controller = start("127.0.0.1", port, BounceSettings(bounce_max_bytes=50_000),
                       get_settings().identity.bounce_domain)
    try:
        yield port
    finally:
        controller.stop()


def spooled() -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(InboundMessage)) or 0


def send(port: int, envelope_to: str, raw: bytes, mail_from: str = "") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail(mail_from, [envelope_to], raw)


def test_end_to_end_dsns_to_the_bounce_server_suppress_the_right_readers(
        clean, worker, bounce_server) -> None:
    edition = make_sent_edition()
    people = {name: make_reader(f"{name}@example.net")
              for name in ("gone", "moved", "full", "blocked", "angry", "fine")}
    deliveries = {name: make_delivery(edition, sub) for name, sub in people.items()}

    def dsn_for(name: str, status: str, diagnostic: str,
                to: str | None = None) -> tuple[str, bytes]:
        verp = to or verp_of(deliveries[name])
        email = f"{name}@example.net"
        return verp, dsn(to_verp=verp, recipients=[(email, "failed", status, diagnostic)],
                         original=original_headers(email, newsletter_id(
                             edition, deliveries[name]), verp))

    genuine = verp_of(deliveries["fine"])
    forged = genuine[:genuine.index("-") + 1] + "b" * 16 + genuine[genuine.index("@"):]
    mails = [
        dsn_for("gone", "5.1.1", "550 5.1.1 <gone@example.net>: User unknown"),
        dsn_for("moved", "5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; "
                                   "Recipient not found by SMTP address lookup"),
        dsn_for("full", "5.2.2", "552 5.2.2 Mailbox full"),
        dsn_for("blocked", "5.7.1", "550 5.7.1 Message rejected due to DMARC policy"),
        # A forged token naming a real reader, with a real-looking 5.1.1: suppresses nobody.
        dsn_for("fine", "5.1.1", "550 5.1.1 User unknown", to=forged),
        ("fbl@" + get_settings().identity.bounce_domain,
         arf(to="fbl@" + get_settings().identity.bounce_domain, reported_rcpt="angry@example.net",
             original=original_headers("angry@example.net", newsletter_id(
                 edition, deliveries["angry"]), verp_of(deliveries["angry"])))),
    ]
    for envelope_to, raw in mails:
        send(bounce_server.port, envelope_to, raw)

    wait_for(lambda: len(bounces()) == len(mails) and spooled() == 0, timeout=60,
             what="every bounce processed by the worker")

    by_reader = {b.recipient: b for b in bounces()}
    assert by_reader["gone@example.net"].action == "suppressed"
    assert by_reader["moved@example.net"].action == "suppressed"
    assert by_reader["full@example.net"].action == "counted: 1 of 3 soft"
    assert by_reader["blocked@example.net"].bounce_class == BounceClass.policy
    assert by_reader["fine@example.net"].attribution == "none"
    assert by_reader["angry@example.net"].action == "unsubscribed and suppressed"
    assert {b.source for b in bounces()} == {"mx"}

    with transaction() as session:
        now_suppressed = {name for name in people
                          if is_suppressed(session, key_hash(f"{name}@example.net"))}
    # The sending pipeline excludes these from every later edition (at audience freeze and
    # again before each send); here it is enough that they are on the list.
    assert now_suppressed == {"gone", "moved", "angry"}
    for name in ("gone", "moved", "angry"):
        assert "suppressed" in [e.kind for e in events_of(people[name])]
    for name in ("full", "blocked", "fine"):
        assert events_of(people[name]) == [] and status_of(people[name]) == "confirmed"
    assert status_of(people["angry"]) == "unsubscribed"


def test_the_server_takes_mail_only_for_the_bounce_domain_and_up_to_the_cap(
        small_cap_server) -> None:
    port = small_cap_server
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("")
        code, reply = smtp.rcpt("someone@example.net")
        assert code == 550 and b"only mail for" in reply
        code, _ = smtp.rcpt("bounces+anything@" + get_settings().identity.bounce_domain.upper())
        assert code == 250

    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(port, "bounces+x@" + get_settings().identity.bounce_domain, b"Subject: big\r\n\r\n"
             + (b"x" * 76 + b"\r\n") * 800)
    assert refused.value.smtp_code == 552
    # A client that does not announce the size (HELO, no SIZE) is stopped after DATA.
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.helo()
        smtp.mail("")
        smtp.rcpt("bounces+x@" + get_settings().identity.bounce_domain)
        code, _ = smtp.data(b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 800)
    assert code == 552
    assert spooled() == 0 and bounces() == []


def test_an_accepted_message_is_stored_before_the_250_and_then_processed(
        small_cap_server, worker) -> None:
    raw = dsn(to_verp="bounces+x@" + get_settings().identity.bounce_domain, recipients=[
        ("a@example.net", "failed", "5.1.1", "550 5.1.1 User unknown")])
    with smtplib.SMTP("127.0.0.1", small_cap_server, timeout=10) as smtp:
        smtp.helo()
        smtp.mail("")
        smtp.rcpt("bounces+x@" + get_settings().identity.bounce_domain)
        code, reply = smtp.data(raw)
    assert code == 250 and reply.startswith(b"2.0.0 accepted as ")
    spool_id = int(reply.rsplit(b" ", 1)[1])
    fingerprint = hashlib.sha256(raw).hexdigest()

    def recorded() -> list[Bounce]:
        with transaction() as session:
            return list(session.scalars(select(Bounce).where(Bounce.fingerprint == fingerprint)))

    with transaction() as session:
        row = session.get(InboundMessage, spool_id)
        spooled_raw = row.raw if row is not None else None
    # Still waiting in the spool, or already processed by the worker: never lost. (Looked
    # up after that transaction: on SQLite a second one inside it waits for it, forever.)
    assert spooled_raw == raw or len(recorded()) == 1
    wait_for(lambda: spooled() == 0 and recorded(), timeout=60, what="the worker's intake")
    assert len(recorded()) == 1


def test_processing_a_spooled_message_twice_records_it_once(clean) -> None:
    raw = dsn(to_verp="bounces+x@" + get_settings().identity.bounce_domain, recipients=[
        ("a@example.net", "failed", "5.1.1", "550 5.1.1 User unknown")])
    to = "bounces+x@" + get_settings().identity.bounce_domain
    with transaction() as session:
        spool_id = spool_message(session, raw=raw, source="mx", envelope_from="",
                                 envelope_to=[to]).id
    with transaction() as session:
        first = process_spooled(session, spool_id, bounces=BOUNCES, keys=stack_keys(),
                                ours=OURS)
    with transaction() as session:
        second = process_spooled(session, spool_id, bounces=BOUNCES, keys=stack_keys(),
                                ours=OURS)
    assert first is not None and len(first.recorded) == 1 and second is None
    assert len(bounces()) == 1 and spooled() == 0


def test_a_lost_task_is_picked_up_from_the_spool(clean, worker) -> None:
    from workers.app import app as celery_app
    from workers.bounces import process_spool

    reader = make_reader("late@example.net")
    edition = make_sent_edition()
    delivery = make_delivery(edition, reader)
    raw = dsn(to_verp=verp_of(delivery), recipients=[
        ("late@example.net", "failed", "5.1.1", "550 5.1.1 User unknown")])
    with transaction() as session:  # accepted, but its task never reached Redis
        row = spool_message(session, raw=raw, source="mx", envelope_from="",
                            envelope_to=[verp_of(delivery)])
        row.received_at = utcnow() - dt.timedelta(minutes=10)
    # What beat runs every minute (published to this backend's Redis, whichever the
    # Celery app in this process was first configured with).
    with celery_app.connection_for_write(get_settings().redis_url) as connection:
        process_spool.apply_async(connection=connection)
    wait_for(lambda: spooled() == 0 and bounces(), timeout=60, what="the spool drained")
    [bounce] = bounces()
    assert bounce.subscriber_id == reader and bounce.action == "suppressed"
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Bounce)) == 1
