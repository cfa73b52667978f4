"""The preference page's two mails, sent by the confirmations queue's workers.

- The confirmation mail of a request (:data:`~mailer.emails.kinds.MessageKind.
  preference_request`, ``templates/email/preference-request``): the link that lets the
  export go out, or erases the person.
- The data export (``MessageKind.data_export``, ``templates/email/data-export``): what
  :func:`mailer.privacy.export` says about the person, as a JSON attachment, to the
  address and nowhere else.

Each is sent once per round however often its task runs: its Message-ID names the
subscriber and the round, and the consent event recording the server's 250 carries it,
so a task that runs again finds it and sends nothing. (A crash between the 250 and that
record sends it again, as a welcome mail would be.)
"""

from __future__ import annotations

import json
import logging

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from mailer import privacy
from mailer.config import Settings
from mailer.db import transaction
from mailer.emails.kinds import MessageKind
from mailer.emails.message import Attachment, message_id
from mailer.emails.send import SendResult, send_one
from mailer.preferences.service import BY_READER, REQUEST_TTL, Action, confirmation_url
from mailer.subscribers.confirmation_mail import MailResult
from mailer.subscribers.models import ConsentEvent, ConsentEventKind, Subscriber
from mailer.subscribers.records import record_event
from mailer.subscribers.unsubscribe import preferences_url

log = logging.getLogger(__name__)


def send_request_mail(subscriber_id: int, action: Action, round_: int, *,
                      settings: Settings) -> MailResult:
    """Mail the confirmation link of the reader's request (``action``, asked for at
    ``round_``) to their address."""
    kind, ids = MessageKind.preference_request, [subscriber_id, action, round_]
    with transaction() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or _sent(session, subscriber_id, ConsentEventKind.request_mailed,
                                       message_id(kind, *ids, identity=settings.identity,
                                                  keys=settings.all_secrets)):
            return MailResult.nothing
        context = {"settings": settings, "subscriber": subscriber, "action": action,
                   "confirm_url": confirmation_url(subscriber, action, round_,
                                                   base_url=settings.base_url,
                                                   keys=settings.all_secrets),
                   "preferences_url": preferences_url(subscriber, base_url=settings.base_url,
                                                      keys=settings.all_secrets),
                   "valid_days": REQUEST_TTL.days}
        recipient = subscriber.email
    result = send_one(kind, recipient, context, ids=ids, identity=settings.identity,
                      keys=settings.all_secrets, smtp=settings.smtp, verp_id=subscriber_id)
    return _recorded(result, subscriber_id, ConsentEventKind.request_mailed,
                     {"action": action, "round": round_})


def send_data_export(subscriber_id: int, round_: int, *, settings: Settings) -> MailResult:
    """Mail the reader's data (GDPR Art. 15) to their address, as a JSON attachment."""
    kind, ids = MessageKind.data_export, [subscriber_id, round_]
    with transaction() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or _sent(session, subscriber_id, ConsentEventKind.data_exported,
                                       message_id(kind, *ids, identity=settings.identity,
                                                  keys=settings.all_secrets)):
            return MailResult.nothing
        data = privacy.export(session, subscriber, by=BY_READER)
        context = {"settings": settings, "subscriber": subscriber,
                   "preferences_url": preferences_url(subscriber, base_url=settings.base_url,
                                                      keys=settings.all_secrets)}
        recipient = subscriber.email
    attachment = Attachment("my-data.json", "application/json",
                            json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"))
    result = send_one(kind, recipient, context, ids=ids, identity=settings.identity,
                      keys=settings.all_secrets, smtp=settings.smtp, verp_id=subscriber_id,
                      attachments=[attachment])
    return _recorded(result, subscriber_id, ConsentEventKind.data_exported, {"round": round_})


def _sent(session: Session, subscriber_id: int, kind: ConsentEventKind, msg_id: str) -> bool:
    return bool(session.scalar(select(exists().where(
        ConsentEvent.subscriber_id == subscriber_id, ConsentEvent.kind == kind,
        ConsentEvent.message_id == msg_id))))


def _recorded(result: SendResult, subscriber_id: int, kind: ConsentEventKind,
              detail: dict[str, object]) -> MailResult:
    extra = {"subscriber_id": subscriber_id, "smtp_code": result.code}
    if result.failure is not None:
        log.warning("%s not sent: %s", result.kind, result.failure, extra=extra)
        return MailResult.retry if result.temporary else MailResult.failed
    with transaction() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is not None:
            record_event(session, subscriber, kind, message_id=result.message_id,
                         detail=detail)
    log.info("%s sent: %s", result.kind, result.reply, extra=extra)
    return MailResult.sent
