"""Bounce-side test material: readers, editions and deliveries made directly in the
database, and the mails that come back (RFC 3464 DSNs, RFC 5965 ARF reports, replies)."""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import select

from mailer.bounces.models import Bounce
from mailer.config import IdentitySettings
from mailer.db import transaction, utcnow
from mailer.deliveries.models import Delivery
from mailer.editions.models import Edition
from mailer.emails.message import message_id
from mailer.emails.verp import return_path
from mailer.lists.models import Subscription
from mailer.subscribers.addresses import normalise
from mailer.subscribers.models import ConsentEvent, Subscriber, Suppression
from mailer.subscribers.queries import status_on
from mailer.tokens import address_hash
from tests.support.factories import FIRST_LIST, stack_keys

_slugs = itertools.count(1)


IDENTITY = IdentitySettings()  # the stack's sending and bounce domains (the defaults)


def make_reader(email: str, status: str = "confirmed") -> int:
    address, key = normalise(email)
    now = utcnow()
    with transaction() as session:
        sub = Subscriber(public_id=secrets.token_hex(16), email=address, email_key=key,
                         address_hash=address_hash(key), source="test")
        session.add(sub)
        session.flush()
        session.add(Subscription(subscriber_id=sub.id, list_id=FIRST_LIST, status=status,
                                 confirmed_at=now if status == "confirmed" else None))
        return sub.id


def make_sent_edition(state: str = "sent") -> int:
    """An edition row in ``state`` (sent by default), no articles: what a bounce is of.
    A draft made as staff make one is :func:`tests.support.factories.make_edition`."""
    now = utcnow()
    with transaction() as session:
        edition = Edition(slug=f"test-edition-{next(_slugs)}-{secrets.token_hex(3)}",
                          subject="CEP Newsletter", window_start=now - dt.timedelta(days=60),
                          window_end=now, state=state)
        session.add(edition)
        session.flush()
        return edition.id


def make_delivery(edition_id: int, subscriber_id: int, state: str = "sent",
                  sent_at: dt.datetime | None = None) -> int:
    with transaction() as session:
        delivery = Delivery(edition_id=edition_id, subscriber_id=subscriber_id, state=state,
                            attempts=1, sent_at=(sent_at or utcnow()) if state == "sent" else None)
        session.add(delivery)
        session.flush()
        return delivery.id


def verp_of(delivery_id: int) -> str:
    return return_path("delivery", delivery_id, identity=IDENTITY, keys=stack_keys())


def newsletter_id(edition_id: int, delivery_id: int) -> str:
    return message_id("nl", edition_id, delivery_id, identity=IDENTITY, keys=stack_keys())


# --- mails that come back --------------------------------------------------------------------


def original_headers(to: str, msg_id: str, return_path_: str = "") -> str:
    lines = [f"Return-Path: <{return_path_}>"] if return_path_ else []
    lines += [
        "From: CEP Newsletter <newsletter@cep-probation.example.org>",
        f"To: {to}",
        "Subject: CEP Newsletter",
        f"Message-ID: {msg_id}",
        "Date: " + format_datetime(utcnow()),
    ]
    return "\r\n".join(lines) + "\r\n"


def dsn(*, to_verp: str, recipients: list[tuple[str, str, str, str]],
        original: str = "", reporting_mta: str = "mx.example.net",
        report_type: str = "delivery-status") -> bytes:
    """A multipart/report DSN to ``to_verp``; each recipient is (address, action, status,
    diagnostic)."""
    msg = EmailMessage()
    msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    msg["To"] = to_verp
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = make_msgid(domain=reporting_mta)
    msg["Auto-Submitted"] = "auto-replied"
    human = "\n".join(f"<{a}>: {d}" for a, _, _, d in recipients)
    msg.set_content(f"This is the mail system at host {reporting_mta}.\n\n"
                    f"I'm sorry to have to inform you that your message could not\n"
                    f"be delivered to one or more recipients.\n\n{human}\n")
    fields = f"Reporting-MTA: dns; {reporting_mta}\r\nArrival-Date: {format_datetime(utcnow())}\r\n"
    for address, action, status, diagnostic in recipients:
        fields += (f"\r\nFinal-Recipient: rfc822; {address}\r\nOriginal-Recipient: rfc822;"
                   f" {address}\r\nAction: {action}\r\nStatus: {status}\r\n"
                   f"Remote-MTA: dns; mx.{address.rpartition('@')[2]}\r\n"
                   f"Diagnostic-Code: smtp; {diagnostic}\r\n")
    return _report(msg, report_type, fields, original)


def _report(msg: EmailMessage, report_type: str, fields: str, original: str) -> bytes:
    """Turn ``msg`` (with its human-readable text) into a multipart/report by hand, so the
    machine-readable part is exactly what a real MTA sends."""
    boundary = "=_report_" + secrets.token_hex(8)
    head = "".join(f"{k}: {v}\r\n" for k, v in msg.items() if k.lower() not in
                   ("content-type", "content-transfer-encoding", "mime-version"))
    text = msg.get_content()
    status_type = "message/feedback-report" if report_type == "feedback-report" \
        else "message/delivery-status"
    body = (
        f"{head}MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"\r\n'
        f"\r\n--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"{text.replace(chr(10), chr(13) + chr(10))}\r\n"
        f"--{boundary}\r\nContent-Type: {status_type}\r\n\r\n{fields}\r\n"
    )
    if original:
        body += f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{original}\r\n"
    body += f"--{boundary}--\r\n"
    return body.encode()


def arf(*, to: str, reported_rcpt: str, original: str, feedback_type: str = "abuse") -> bytes:
    """An RFC 5965 abuse report about a message we sent to ``reported_rcpt``."""
    msg = EmailMessage()
    msg["From"] = "Feedback Loop <fbl@isp.example.net>"
    msg["To"] = to
    msg["Subject"] = "Abuse report"
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = make_msgid(domain="isp.example.net")
    msg.set_content("This is an email abuse report for an email message received from IP "
                    "192.0.2.1.\n")
    fields = (f"Feedback-Type: {feedback_type}\r\nUser-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n"
              f"Original-Rcpt-To: {reported_rcpt}\r\nSource-IP: 192.0.2.1\r\n"
              f"Arrival-Date: {format_datetime(utcnow())}\r\n")
    boundary = "=_arf_" + secrets.token_hex(8)
    head = "".join(f"{k}: {v}\r\n" for k, v in msg.items() if k.lower() not in
                   ("content-type", "content-transfer-encoding", "mime-version"))
    body = (
        f"{head}MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\r\n'
        f"\r\n--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is an email abuse report.\r\n"
        f"--{boundary}\r\nContent-Type: message/feedback-report\r\n\r\n{fields}\r\n"
        f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n{original}\r\nHello reader.\r\n"
        f"--{boundary}--\r\n"
    )
    return body.encode()


def plain_mail(*, to: str, subject: str, body: str, headers: dict[str, str] | None = None,
               sender: str = "Anna Schmidt <anna@example.org>") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = make_msgid(domain="example.org")
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    return msg.as_bytes()


# --- looking at the outcome ----------------------------------------------------------------


def bounces() -> list[Bounce]:
    with transaction() as session:
        return list(session.scalars(select(Bounce).order_by(Bounce.id)))


def suppressed(email: str) -> Suppression | None:
    _, key = normalise(email)
    with transaction() as session:
        return session.scalars(select(Suppression).where(
            Suppression.address_hash == address_hash(key))).first()


def status_of(subscriber_id: int, list_id: int = FIRST_LIST) -> str | None:
    """The reader's status on the list (the first one unless named)."""
    with transaction() as session:
        return status_on(session, subscriber_id, list_id)


def events_of(subscriber_id: int) -> list[ConsentEvent]:
    with transaction() as session:
        return list(session.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == subscriber_id).order_by(ConsentEvent.id)))
