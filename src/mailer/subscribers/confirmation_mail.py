"""Sending the double opt-in mail: claimed in the database, sent (``send_one``), then recorded.

The claim makes a task that runs twice (a redelivered Celery message, the sweeper's
resend) send one mail; the mark after the server's 250 makes a crash before it a resend,
never a loss.
"""

from __future__ import annotations

import datetime as dt
import logging
from enum import StrEnum

from sqlalchemy import select

from mailer.config import Settings
from mailer.db import transaction, utcnow
from mailer.emails.kinds import MessageKind
from mailer.emails.send import render, send_one
from mailer.lists.models import MailingList
from mailer.lists.service import identity_for, names_of
from mailer.subscribers.confirmation import (
    claim_confirmation_mail,
    confirmation_url,
    mark_confirmation_sent,
    release_confirmation_mail,
)
from mailer.subscribers.models import Subscriber

log = logging.getLogger(__name__)


class MailResult(StrEnum):
    """What became of one confirmation mail (a delivery attempt's is ``ledger.Outcome``)."""

    sent = "sent"
    nothing = "nothing"  # not pending any more, already sent, or sent today
    retry = "retry"  # a temporary failure: try again later
    failed = "failed"  # the server refused it for good


def send_confirmation_mail(subscriber_id: int, *, settings: Settings,
                           retry_in: float = 0.0) -> MailResult:
    """Send the pending confirmation mail of ``subscriber_id``, if there is one to send
    (``settings``: its link's address and lifetime, its sender, the SMTP relay).

    On a temporary failure the token stays claimed for ``retry_in`` seconds: the caller's
    own retry takes it then, and the sweeper does not start a second chain of retries
    beside it (which, for a server that keeps answering 4xx, would multiply the mails
    queued for one address every sweep).
    """
    with transaction() as session:
        token = claim_confirmation_mail(session, subscriber_id)
        if token is None:
            return MailResult.nothing
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        lists = list(session.scalars(select(MailingList)
                                     .where(MailingList.id.in_(token.lists or []))
                                     .order_by(MailingList.position, MailingList.id)))
        # One list: its own sender; several: the settings' (the association's).
        identity = (identity_for(lists[0], settings.identity) if len(lists) == 1
                    else settings.identity)
        # Rendered inside the claim's transaction: a template that fails claims nothing.
        # To carries the address alone, as in the newsletters: nothing a stranger typed
        # into the public form reaches a header (the email package's formataddr leaves
        # ":" and "@" in a non-ASCII display name unquoted, so "Otto Bcc: x@y Ölberg"
        # would turn To into a group naming x@y).
        rendered = render(MessageKind.confirmation, dict(
            settings=settings,
            subscriber=subscriber,
            lists=lists,
            list_names=names_of(lists),
            confirm_url=confirmation_url(token, base_url=settings.base_url,
                                         keys=settings.all_secrets),
            expires_days=settings.signup.confirmation_ttl_days,
        ))
        recipient, token_id = subscriber.email, token.id
    result = send_one(MessageKind.confirmation, recipient, {}, ids=[token_id],
                      identity=identity, keys=settings.all_secrets,
                      smtp=settings.smtp, verp_id=token_id,
                      rendered=rendered)
    if result.failure is not None:
        failure = result.failure
        retry_at = utcnow() + dt.timedelta(seconds=retry_in)
        with transaction() as session:
            release_confirmation_mail(session, token_id, str(failure),
                                      final=not failure.temporary, retry_at=retry_at)
        log.warning("confirmation mail not sent: %s", failure,
                    extra={"subscriber_id": subscriber_id, "smtp_code": failure.code})
        return MailResult.retry if failure.temporary else MailResult.failed
    with transaction() as session:
        mark_confirmation_sent(session, token_id, result.message_id)
    log.info("confirmation mail sent: %s", result.reply,
             extra={"subscriber_id": subscriber_id, "smtp_code": result.code})
    return MailResult.sent
