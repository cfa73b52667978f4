"""Changes to the suppression list.

They take a session and never commit: the caller owns the transaction. Each change writes
a consent event on the subscriber who has the address, if any. A change someone makes (who:
``by``, a staff member's address or ``cli:<user>``) also writes its audit entry; the
system's own suppressions (bounces, complaints) are told by their consent events and
bounce rows.

The table (``Suppression``) is defined in ``mailer.subscribers.models``, beside the
subscriber it is joined with: who may be mailed (``subscribers.queries.mailable``), the
importer and a fresh confirmation (which lifts a suppression) read it there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.subscribers.models import (
    ConsentEventKind,
    Subscriber,
    Suppression,
    SuppressionReason,
)
from mailer.subscribers.records import record_event


def is_suppressed(session: Session, hash_: str) -> bool:
    return bool(session.scalar(select(exists().where(Suppression.address_hash == hash_))))


#: Who suppresses on the system's own account (a bounce, a complaint): not audited.
SYSTEM = "system"


def _audit(session: Session, by: str, action: str, hash_: str,
           subscriber: Subscriber | None, detail: dict[str, Any]) -> None:
    if by == SYSTEM:
        return
    target = f"subscriber:{subscriber.id}" if subscriber is not None else f"address:{hash_[:16]}"
    record(session, actor=by, action=action, target=target, detail=detail)


def suppress(
    session: Session, hash_: str, *, reason: str, evidence: str = "", by: str = SYSTEM,
) -> bool:
    """Add an address hash to the suppression list; False when it was there already."""
    if is_suppressed(session, hash_):
        return False
    try:
        with session.begin_nested():
            session.add(Suppression(address_hash=hash_, reason=reason,
                                    evidence=evidence[:4000], created_by=by[:100]))
            session.flush()
    except IntegrityError:
        return False
    subscriber = session.scalars(select(Subscriber).where(Subscriber.address_hash == hash_)).first()
    if subscriber is not None:
        record_event(session, subscriber, ConsentEventKind.suppressed,
                     detail={"reason": reason, "by": by, "evidence": evidence[:500]})
    _audit(session, by, "suppression.add", hash_, subscriber, {"reason": reason})
    return True


class ErasureKept(ValueError):
    """An erasure's entry is not lifted without ``force``: it is what keeps an erased
    person from being imported and mailed again."""

    def __init__(self) -> None:
        super().__init__("An erasure's entry stays: it is what keeps an erased person from "
                         "being imported and mailed again.")


def unsuppress(session: Session, hash_: str, *, by: str, force: bool = False) -> bool:
    """Lift an address's suppression; False when it was not on the list. An erasure's
    entry raises ErasureKept unless ``force`` (the CLI's ``--force``, an operator's
    deliberate act); the web and the API never force it."""
    suppression = session.scalars(
        select(Suppression).where(Suppression.address_hash == hash_)
    ).first()
    if suppression is None:
        return False
    if suppression.reason == SuppressionReason.erased and not force:
        raise ErasureKept
    subscriber = session.scalars(select(Subscriber).where(Subscriber.address_hash == hash_)).first()
    if subscriber is not None:
        record_event(session, subscriber, ConsentEventKind.unsuppressed,
                     detail={"reason": suppression.reason, "by": by})
    _audit(session, by, "suppression.remove", hash_, subscriber,
           {"reason": suppression.reason})
    session.delete(suppression)
    return True
