"""The welcome mail, sent once a reader has confirmed (``MAILER_WELCOME_MAIL``).

``confirm`` publishes it after its transaction commits. It is one registry entry
(``MessageKind.welcome`` in :mod:`mailer.emails.kinds`) and one template folder
(``templates/email/welcome``); :func:`~mailer.emails.send.send_one` does the rest.

Once per confirmation: its Message-ID names the subscriber and the confirmation round,
and the ``welcome_sent`` consent event that records the server's 250 carries it, so a task
that runs again (a redelivered Celery message, a retry) finds it and sends nothing. A crash
between the 250 and that record sends it again, as a confirmation mail would be. Two
copies of the task at the same moment (a redelivery while the first still runs) do not
both send: each takes a claim in Redis first (``SET NX``, five minutes), checks for the
record under it, and a copy that finds the claim taken retries later.

The mail links the newest sent edition in the web archive when there is one. Editions sit
above subscribers in the layers, so the task looks it up (``editions.service.
latest_edition_link``) and hands it in as a :class:`LatestEdition`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import exists, select

from mailer.config import get_settings
from mailer.db import transaction
from mailer.emails.kinds import MessageKind
from mailer.emails.message import message_id
from mailer.emails.send import send_one
from mailer.redis import get_redis
from mailer.subscribers.confirmation_mail import MailResult
from mailer.subscribers.models import (
    ConsentEvent,
    ConsentEventKind,
    Subscriber,
    SubscriberStatus,
)
from mailer.subscribers.records import record_event
from mailer.subscribers.unsubscribe import unsubscribe_url

log = logging.getLogger(__name__)

#: The Redis key a copy of the task holds while it sends (with the subscriber and token).
CLAIM_PREFIX = "mailer:welcome:sending:"
CLAIM_SECONDS = 300


@dataclass(frozen=True)
class LatestEdition:
    """The newest sent edition as the welcome mail names it: its subject and archive page."""

    subject: str
    url: str


def send_welcome_mail(subscriber_id: int, token_id: int, *,
                      latest_edition: LatestEdition | None = None) -> MailResult:
    """Welcome the reader who confirmed with ``token_id``, unless that is done already or
    the reader is no longer subscribed; ``latest_edition`` is linked when given."""
    claim = f"{CLAIM_PREFIX}{subscriber_id}:{token_id}"
    if not get_redis().set(claim, "sending", nx=True, ex=CLAIM_SECONDS):
        return MailResult.retry  # another copy is sending it now: look again later
    try:
        return _send_under_claim(subscriber_id, token_id, latest_edition)
    finally:
        get_redis().delete(claim)


def _send_under_claim(subscriber_id: int, token_id: int,
                      latest_edition: LatestEdition | None) -> MailResult:
    settings = get_settings()
    ids = [subscriber_id, token_id]
    with transaction() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or subscriber.status != SubscriberStatus.confirmed:
            return MailResult.nothing
        if session.scalar(select(exists().where(
                ConsentEvent.subscriber_id == subscriber_id,
                ConsentEvent.kind == ConsentEventKind.welcome_sent,
                ConsentEvent.message_id == message_id(MessageKind.welcome, *ids)))):
            return MailResult.nothing
        context = {"settings": settings, "subscriber": subscriber,
                   "unsubscribe_url": unsubscribe_url(subscriber),
                   "latest_edition": latest_edition}
        recipient = subscriber.email
    result = send_one(MessageKind.welcome, recipient, context, ids=ids, verp_id=subscriber_id)
    if result.failure is not None:
        log.warning("welcome mail not sent: %s", result.failure,
                    extra={"subscriber_id": subscriber_id, "smtp_code": result.code})
        return MailResult.retry if result.temporary else MailResult.failed
    with transaction() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is not None:
            record_event(session, subscriber, ConsentEventKind.welcome_sent,
                         message_id=result.message_id)
    log.info("welcome mail sent: %s", result.reply,
             extra={"subscriber_id": subscriber_id, "smtp_code": result.code})
    return MailResult.sent
