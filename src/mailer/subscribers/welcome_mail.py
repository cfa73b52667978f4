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

A welcome whose task was lost (the broker was away when the confirm committed, a crash) is
queued again by the sweeper: ``requeue_lost_welcomes`` finds the readers who confirmed more
than five minutes and less than two days ago and have no ``welcome_sent`` since. The
window keeps an upgrade (the setting is on by default) from welcoming every reader of old.
A round is queued again at most every half hour (a Redis key), so a mail that waits for
its task's own retries is not queued once more at every sweep; one the server refused for
good is held for the whole window.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from mailer import tasks
from mailer.config import Settings, SignupSettings
from mailer.db import transaction, utcnow
from mailer.emails.kinds import MessageKind
from mailer.emails.message import message_id
from mailer.emails.send import send_one
from mailer.lists.models import MailingList, Subscription, SubscriptionStatus
from mailer.lists.service import identity_for, names_of
from mailer.redis import get_redis
from mailer.subscribers.confirmation_mail import MailResult
from mailer.subscribers.models import (
    ConfirmationToken,
    ConsentEvent,
    ConsentEventKind,
    Subscriber,
)
from mailer.subscribers.records import record_event
from mailer.subscribers.unsubscribe import preferences_url, unsubscribe_url_for

log = logging.getLogger(__name__)

#: The Redis key a copy of the task holds while it sends (with the subscriber and token).
CLAIM_PREFIX = "mailer:welcome:sending:"
CLAIM_SECONDS = 300
#: The sweeper queues a welcome again once its reader confirmed this long ago with none
#: sent since; never for a confirmation older than the window.
RESEND_AFTER = dt.timedelta(minutes=5)
RESEND_WINDOW = dt.timedelta(days=2)
#: While this key (with the subscriber and token) is set, the sweeper leaves the round
#: alone: for half an hour after each requeue, for the window after a refusal for good.
HOLD_PREFIX = "mailer:welcome:hold:"
REQUEUE_EVERY_SECONDS = 1800


@dataclass(frozen=True)
class LatestEdition:
    """The newest sent edition as the welcome mail names it: its subject and archive page."""

    subject: str
    url: str


def send_welcome_mail(subscriber_id: int, token_id: int, *, settings: Settings,
                      latest_edition: LatestEdition | None = None) -> MailResult:
    """Welcome the reader who confirmed with ``token_id``, unless that is done already or
    the reader is no longer subscribed; ``latest_edition`` is linked when given."""
    claim = f"{CLAIM_PREFIX}{subscriber_id}:{token_id}"
    if not get_redis().set(claim, "sending", nx=True, ex=CLAIM_SECONDS):
        return MailResult.retry  # another copy is sending it now: look again later
    try:
        return _send_under_claim(subscriber_id, token_id, latest_edition, settings)
    finally:
        get_redis().delete(claim)


def _send_under_claim(subscriber_id: int, token_id: int, latest_edition: LatestEdition | None,
                      settings: Settings) -> MailResult:
    ids = [subscriber_id, token_id]
    with transaction() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        token = session.get(ConfirmationToken, token_id)
        lists = [] if subscriber is None or token is None else list(session.scalars(
            select(MailingList).join(Subscription, Subscription.list_id == MailingList.id)
            .where(Subscription.subscriber_id == subscriber_id,
                   Subscription.status == SubscriptionStatus.confirmed,
                   Subscription.list_id.in_(token.lists or []))
            .order_by(MailingList.position, MailingList.id)))
        if subscriber is None or not lists:  # no longer on any list the round confirmed
            return MailResult.nothing
        identity = identity_for(lists[0], settings.identity)
        if session.scalar(select(exists().where(
                ConsentEvent.subscriber_id == subscriber_id,
                ConsentEvent.kind == ConsentEventKind.welcome_sent,
                ConsentEvent.message_id == message_id(MessageKind.welcome, *ids,
                                                      identity=identity,
                                                      keys=settings.all_secrets)))):
            return MailResult.nothing
        context = {"settings": settings, "subscriber": subscriber, "lists": lists,
                   "list_names": names_of(lists),
                   "unsubscribe_url": unsubscribe_url_for(
                       subscriber.public_id, base_url=settings.base_url,
                       keys=settings.all_secrets, list_id=lists[0].id),
                   "preferences_url": preferences_url(subscriber, base_url=settings.base_url,
                                                      keys=settings.all_secrets),
                   "latest_edition": latest_edition}
        recipient = subscriber.email
    result = send_one(MessageKind.welcome, recipient, context, ids=ids, identity=identity,
                      keys=settings.all_secrets, smtp=settings.smtp, verp_id=subscriber_id)
    if result.failure is not None:
        log.warning("welcome mail not sent: %s", result.failure,
                    extra={"subscriber_id": subscriber_id, "smtp_code": result.code})
        if not result.temporary:  # refused for good: the sweeper does not try it again
            get_redis().set(f"{HOLD_PREFIX}{subscriber_id}:{token_id}", "refused",
                            ex=int(RESEND_WINDOW.total_seconds()))
        return MailResult.retry if result.temporary else MailResult.failed
    with transaction() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is not None:
            record_event(session, subscriber, ConsentEventKind.welcome_sent,
                         message_id=result.message_id)
    log.info("welcome mail sent: %s", result.reply,
             extra={"subscriber_id": subscriber_id, "smtp_code": result.code})
    return MailResult.sent


def welcomes_to_resend(session: Session, *, older_than: dt.timedelta = RESEND_AFTER,
                       window: dt.timedelta = RESEND_WINDOW) -> list[tuple[int, int]]:
    """(subscriber, token) of each reader who confirmed between ``window`` and
    ``older_than`` ago and has had no welcome since: the rounds whose task was lost.

    The token is the one the reader confirmed with (used at the very moment of the
    confirmation), the round the welcome's Message-ID names.
    """
    now = utcnow()
    welcomed = exists().where(ConsentEvent.subscriber_id == ConfirmationToken.subscriber_id,
                              ConsentEvent.kind == ConsentEventKind.welcome_sent,
                              ConsentEvent.at >= ConfirmationToken.used_at)
    # A round that confirmed something: a subscription confirmed at the moment it was used.
    confirmed = exists().where(Subscription.subscriber_id == ConfirmationToken.subscriber_id,
                               Subscription.status == SubscriptionStatus.confirmed,
                               Subscription.confirmed_at == ConfirmationToken.used_at)
    # Read from the tokens, as the confirmations' resend is.
    rows = session.execute(
        select(ConfirmationToken.subscriber_id, func.max(ConfirmationToken.id))
        .where(ConfirmationToken.used_at <= now - older_than,
               ConfirmationToken.used_at > now - window,
               confirmed, ~welcomed)
        .group_by(ConfirmationToken.subscriber_id)
        .order_by(ConfirmationToken.subscriber_id)
        .limit(1000)
    )
    return [(subscriber_id, token_id) for subscriber_id, token_id in rows]


def requeue_lost_welcomes(*, signup: SignupSettings) -> int:
    """Queue again the welcomes whose task was lost (the sweeper's part); how many.

    Nothing when ``signup.welcome_mail`` (``MAILER_WELCOME_MAIL``) is off. Published now:
    the rounds are read from the database, and a broker that is away raises (the next
    sweep tries again).
    """
    if not signup.welcome_mail:
        return 0
    with transaction() as session:
        rounds = welcomes_to_resend(session)
    queued = 0
    for subscriber_id, token_id in rounds:
        if get_redis().set(f"{HOLD_PREFIX}{subscriber_id}:{token_id}", "requeued", nx=True,
                           ex=REQUEUE_EVERY_SECONDS):
            tasks.publish(tasks.SEND_WELCOME, subscriber_id, token_id, session=None)
            queued += 1
    return queued
