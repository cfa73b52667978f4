"""The bounce server's spool: what it accepted, kept in the database until processed.

The bounce server must answer fast and must never lose a message it said 250 to. So it
only stores the raw message (one INSERT) and answers; a Celery task on the default queue
does the parsing and acting later. The task is published after the commit; if Redis loses
it, the beat task ``process-bounce-spool`` publishes it again for any row older than a
couple of minutes. Processing deletes the row in the transaction that records the bounce,
so a task that runs twice finds nothing the second time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.bounces.intake import IntakeResult, receive
from mailer.bounces.models import InboundMessage
from mailer.bounces.parse import OurAddresses
from mailer.config import BounceSettings
from mailer.db import utcnow


def spool_message(
    session: Session, *, raw: bytes, source: str, envelope_from: str,
    envelope_to: Sequence[str],
) -> InboundMessage:
    message = InboundMessage(raw=raw, source=source, envelope_from=envelope_from[:320],
                             envelope_to=[a[:320] for a in envelope_to][:100])
    session.add(message)
    session.flush()
    return message


def process_spooled(session: Session, inbound_id: int, *, bounces: BounceSettings,
                    ours: OurAddresses, keys: Sequence[bytes]) -> IntakeResult | None:
    """Take in one spooled message and delete it; None when it is gone (done already)."""
    message = session.scalars(
        select(InboundMessage).where(InboundMessage.id == inbound_id).with_for_update()
    ).first()
    if message is None:
        return None
    result = receive(session, raw=message.raw, source=message.source, bounces=bounces,
                     ours=ours, keys=keys, envelope_to=message.envelope_to)
    session.delete(message)
    return result


def note_failure(session: Session, inbound_id: int, error: str) -> None:
    """A processing attempt failed (the database went away mid-way, a bug): say so on the
    row, which stays for the next attempt."""
    message = session.get(InboundMessage, inbound_id)
    if message is not None:
        message.attempts += 1
        message.last_error = error[:2000]


#: A message that failed this often stays in the spool with its last_error for an operator
#: (it is a bug, not bad input: bad input is recorded as unparsed).
MAX_ATTEMPTS = 10


def stale_spooled(session: Session, *, older_than: dt.timedelta, limit: int = 1000) -> list[int]:
    """Spooled messages nobody has processed in a while (a lost task): their ids."""
    return list(session.scalars(
        select(InboundMessage.id).where(InboundMessage.received_at < utcnow() - older_than,
                                        InboundMessage.attempts < MAX_ATTEMPTS)
        .order_by(InboundMessage.id).limit(limit)
    ))
