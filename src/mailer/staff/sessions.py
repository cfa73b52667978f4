"""Staff sessions: a random cookie value, stored only as its sha256, that expires.

A new session (and a new cookie value) is made at every login, so a value planted in a
browser before the login is worth nothing afterwards (no session fixation). Each session
carries its own CSRF token, which every form posts back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailer.config import get_settings
from mailer.db import utcnow
from mailer.staff.models import StaffSession, StaffUser


def _key(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode()).hexdigest()


def start(session: Session, user: StaffUser) -> tuple[str, StaffSession]:
    """A fresh session for ``user``: (the cookie value, the row)."""
    purge_expired(session)
    value = secrets.token_urlsafe(32)
    row = StaffSession(
        id=_key(value), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + dt.timedelta(hours=get_settings().session_hours),
    )
    session.add(row)
    session.flush()
    return value, row


def load(session: Session, cookie_value: str | None) -> StaffSession | None:
    """The live session behind a cookie value, with its user; None when there is none, it
    expired, or its user was disabled."""
    if not cookie_value or len(cookie_value) > 200:
        return None
    row = session.get(StaffSession, _key(cookie_value))
    if row is None or row.expires_at <= utcnow() or not row.user.active:
        return None
    return row


def end(session: Session, cookie_value: str | None) -> None:
    if cookie_value and len(cookie_value) <= 200:
        session.execute(delete(StaffSession).where(StaffSession.id == _key(cookie_value)))


def end_all_sessions(session: Session, user: StaffUser) -> None:
    session.execute(delete(StaffSession).where(StaffSession.user_id == user.id))


def purge_expired(session: Session) -> int:
    result = session.execute(delete(StaffSession).where(StaffSession.expires_at <= utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


def csrf_ok(row: StaffSession, token: str | None) -> bool:
    return bool(token) and secrets.compare_digest(row.csrf_token.encode(), (token or "").encode())


def sessions_of(session: Session, user: StaffUser) -> list[StaffSession]:
    return list(session.scalars(select(StaffSession).where(StaffSession.user_id == user.id)))
