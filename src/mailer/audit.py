"""The audit log: who did what, to what, and when.

Every action of a person (a staff member in the admin, an operator's ``mailer`` command as
``cli:<user>``, the schedule) writes one row in the caller's transaction, so an action that
rolls back leaves no entry and an entry always stands for something that happened. The
services write their own entries (``edition.edit``, ``edition.send``, ``suppression.add``…)
with the actor their caller names; the web and the CLI only name it.

It sits below the domain packages (like ``db``), so any of them can write an entry.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from mailer.db import Base, UTCDateTime, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_entry"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    #: A staff member's address, ``cli:<user>``, ``schedule``…
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


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
