"""Staff sessions: a random cookie value, stored only as its sha256, that expires.

A new session (and a new cookie value) is made at every login, so a value planted in a
browser before the login is worth nothing afterwards (no session fixation). Each session
carries its own CSRF token, which every form posts back.

A session ends ``session_hours`` after the login at the latest, and earlier once nobody
used it for ``session_idle_minutes`` (sliding: every request moves the idle deadline on;
the time is written at most once a minute, not on every request).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import delete
from sqlalchemy.orm import Session

from mailer.config import StaffSettings
from mailer.db import utcnow
from mailer.staff.models import StaffSession, StaffUser


def _key(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode()).hexdigest()


def start(session: Session, user: StaffUser,
          staff: StaffSettings) -> tuple[str, StaffSession]:
    """A fresh session for ``user``, lasting ``staff.session_hours``: (the cookie value,
    the row)."""
    purge_expired(session, staff)
    value = secrets.token_urlsafe(32)
    now = utcnow()
    row = StaffSession(
        id=_key(value), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
        created_at=now, last_seen_at=now,
        expires_at=now + dt.timedelta(hours=staff.session_hours),
    )
    session.add(row)
    session.flush()
    return value, row


#: How stale ``last_seen_at`` may get before a request writes it again.
SEEN_RESOLUTION = dt.timedelta(minutes=1)


def load(session: Session, cookie_value: str | None,
         staff: StaffSettings) -> StaffSession | None:
    """The live session behind a cookie value, with its user, marked as used now; None when
    there is none, it expired or sat idle too long, or its user was disabled."""
    if not cookie_value or len(cookie_value) > 200:
        return None
    row = session.get(StaffSession, _key(cookie_value))
    now = utcnow()
    if row is None or row.expires_at <= now or not row.user.active:
        return None
    if now - row.last_seen_at >= dt.timedelta(minutes=staff.session_idle_minutes):
        session.delete(row)  # idle: over for good, even if the next request is in time
        return None
    if now - row.last_seen_at >= SEEN_RESOLUTION:
        row.last_seen_at = now
    return row


def end(session: Session, cookie_value: str | None) -> None:
    if cookie_value and len(cookie_value) <= 200:
        session.execute(delete(StaffSession).where(StaffSession.id == _key(cookie_value)))


def end_all_sessions(session: Session, user: StaffUser) -> None:
    session.execute(delete(StaffSession).where(StaffSession.user_id == user.id))


def purge_expired(session: Session, staff: StaffSettings) -> int:
    now = utcnow()
    idle = now - dt.timedelta(minutes=staff.session_idle_minutes)
    result = session.execute(delete(StaffSession).where(
        (StaffSession.expires_at <= now) | (StaffSession.last_seen_at <= idle)))
    return int(getattr(result, "rowcount", 0) or 0)


def csrf_ok(expected: str, token: str | None) -> bool:
    """Does a posted form's CSRF token match the session's (``StaffSession.csrf_token``)?"""
    return bool(token) and secrets.compare_digest(expected.encode(), (token or "").encode())
