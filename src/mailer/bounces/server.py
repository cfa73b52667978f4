"""The inbound SMTP server for the bounce domain's MX: ``mailer bounces serve``.

It accepts mail only for addresses at ``bounce_domain`` (VERP return paths, and the
address a feedback loop sends its ARF reports to), refuses anything over
``bounce_max_bytes`` with 552, and answers 250 only once the message is committed to the
spool (:mod:`mailer.bounces.spool`); a Celery task on the default queue then parses it and
acts. If the database cannot take the message the answer is 451, so the sending MTA keeps
it and tries again: no message the server accepted is ever lost, and none is half-taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import lru_cache

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from celery import Celery

from mailer.config import get_settings
from mailer.db import publish_after_commit, transaction

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 100


def store(raw: bytes, envelope_from: str, envelope_to: Sequence[str]) -> int:
    """Commit one accepted message to the spool and queue its processing; its spool id."""
    from mailer.bounces.spool import spool_message

    with transaction() as session:
        message = spool_message(session, raw=raw, source="mx", envelope_from=envelope_from,
                                envelope_to=envelope_to)
        inbound_id = message.id
        publish_after_commit(session, lambda: _producer(get_settings().redis_url).send_task(
            "workers.bounces.process_inbound", args=[inbound_id], queue="default"))
    return inbound_id


@lru_cache(maxsize=2)
def _producer(broker_url: str) -> Celery:
    """A Celery client that only publishes, by task name: the server needs the broker, not
    the ``workers`` package (which a development install leaves off the path of the
    ``mailer`` command)."""
    producer = Celery("mailer-bounce-server", set_as_current=False)
    producer.conf.update(broker_url=broker_url, task_serializer="json",
                         broker_connection_retry_on_startup=True)
    return producer


class BounceHandler:
    def __init__(self, domain: str) -> None:
        self.domain = domain.lower().rstrip(".")

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        domain = address.rpartition("@")[2].lower().rstrip(".").rstrip(">")
        if domain != self.domain:
            return f"550 5.7.1 <{address}>: this server takes only mail for {self.domain}"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        try:
            inbound_id = await loop.run_in_executor(
                None, store, raw, envelope.mail_from or "", list(envelope.rcpt_tos))
        except Exception:
            log.exception("could not spool an inbound bounce; answered 451")
            return "451 4.3.0 cannot store the message now, please try again later"
        log.info("bounce mail accepted", extra={"inbound_id": inbound_id, "bytes": len(raw)})
        return f"250 2.0.0 accepted as {inbound_id}"


def start(host: str, port: int) -> Controller:
    """Start the server in a thread of its own; stop it with ``controller.stop()``."""
    settings = get_settings()
    controller = Controller(
        BounceHandler(settings.bounce_domain), hostname=host, port=port,
        server_hostname=settings.bounce_domain, ready_timeout=10,
        data_size_limit=settings.bounce_max_bytes, enable_SMTPUTF8=True,
    )
    controller.start()
    return controller
