"""A real send, then the DSNs and a complaint the world sends back to the bounce server: the
right readers end suppressed, and the next edition goes to everyone else."""

from __future__ import annotations

import smtplib

from sqlalchemy import func, select

from mailer.bounces.models import Bounce
from mailer.config import get_settings
from mailer.db import transaction
from mailer.deliveries.models import Delivery
from mailer.delivery import service as sending
from mailer.subscribers.addresses import key_hash
from mailer.suppression.service import is_suppressed
from tests.conftest import wait_for
from tests.support.bounce_mail import arf, dsn, original_headers
from tests.support.factories import edition_state, make_edition, make_subscribers
from tests.support.mail import parse
from tests.support.processes import free_port
from tests.test_bounce_intake_server import BounceServer


def send_edition(edition_id: int) -> int:
    with transaction() as session:
        audience = sending.start_send(session, edition_id, by="test", settings=get_settings())
    wait_for(lambda: edition_state(edition_id) == "sent", timeout=90, what="the send")
    return audience


def test_bounces_of_a_real_send_suppress_the_right_readers_for_the_next_edition(rig) -> None:
    readers = make_subscribers(20)
    gone, moved, full, blocked, angry = readers[:5]
    rig.worker()
    server = BounceServer({**rig.stack.env, **rig.env}, rig.stack.tmp / "bounce-e2e.log",
                          free_port())
    rig.procs.append(server)
    server.start()

    first = make_edition()
    assert send_edition(first) == 20
    sent = {m.rcpt_tos[0]: m for m in rig.stack.smtp.messages}

    def report_for(address: str, status: str, diagnostic: str) -> tuple[str, bytes]:
        mail = sent[address]  # what the server really received: its envelope and headers
        msg_id = parse(mail)["Message-ID"]
        return mail.mail_from, dsn(
            to_verp=mail.mail_from, recipients=[(address, "failed", status, diagnostic)],
            original=original_headers(address, msg_id, mail.mail_from))

    angry_mail = sent[angry]
    complaint_to = "fbl@bounces.cep-probation.example.org"
    reports = [
        report_for(gone, "5.1.1", "550 5.1.1 <x>: Recipient address rejected: User unknown"),
        report_for(moved, "5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound"),
        report_for(full, "5.2.2", "552 5.2.2 Mailbox full"),
        report_for(blocked, "5.7.1", "550 5.7.1 Message rejected due to DMARC policy"),
        (complaint_to, arf(to=complaint_to, reported_rcpt=angry, original=original_headers(
            angry, parse(angry_mail)["Message-ID"], angry_mail.mail_from))),
    ]
    for envelope_to, raw in reports:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.sendmail("", [envelope_to], raw)

    def bounces() -> int:
        with transaction() as session:
            return session.scalar(select(func.count()).select_from(Bounce)) or 0

    wait_for(lambda: bounces() == len(reports), timeout=60, what="the bounces processed")
    with transaction() as session:
        suppressed = {a for a in readers if is_suppressed(session, key_hash(a))}
        rows = {b.recipient: b for b in session.scalars(select(Bounce))}
    assert suppressed == {gone, moved, angry}
    assert rows[gone].attribution == "verp" and rows[gone].delivery_id is not None
    assert rows[full].bounce_class == "soft" and rows[blocked].bounce_class == "policy"

    rig.stack.smtp.reset()
    second = make_edition(subject="The next edition")
    # One complaint in 20 is far over the 0.3 % stop level: nothing goes out until ops say so.
    with transaction() as session:
        hold = sending.complaint_hold(session, sending=get_settings().sending)
        assert "complaint rate of 5.00 %" in (hold or "")
        sending.acknowledge_complaints(session, first, by="ops@example.org")
    assert send_edition(second) == 17
    got = {r for m in rig.stack.smtp.messages for r in m.rcpt_tos}
    assert got == set(readers) - {gone, moved, angry}
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)
                              .where(Delivery.edition_id == second)) == 17
