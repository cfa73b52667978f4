"""The audit log: who did what, to what, and when.

Every staff action writes one row in the caller's transaction, so an action that rolls
back leaves no entry and an entry always stands for something that happened. The sending
service writes its own rows (``edition.send``, ``edition.pause``…) with the staff member's
address as the actor.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.staff.models import AuditEntry


def record(session: Session, *, actor: str, action: str, target: str = "",
           detail: dict[str, Any] | None = None) -> AuditEntry:
    entry = AuditEntry(actor=actor[:320], action=action[:64], target=target[:200],
                       detail=detail or None)
    session.add(entry)
    return entry


def recent(session: Session, *, limit: int = 100, actor: str | None = None,
           action: str | None = None, target: str | None = None,
           before_id: int | None = None) -> list[AuditEntry]:
    """The newest entries first; ``action`` matches a prefix (``edition.`` for all of them)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    if target:
        query = query.where(AuditEntry.target == target)
    if before_id:
        query = query.where(AuditEntry.id < before_id)
    return list(session.scalars(query))
