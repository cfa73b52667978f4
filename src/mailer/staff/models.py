"""Staff accounts, their sessions, and the audit log of what they did."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailer.audit import AuditEntry
from mailer.db import Base, UTCDateTime, utcnow

__all__ = ["AuditEntry", "Role", "ScheduledDraft", "StaffRecoveryCode", "StaffSession",
           "StaffUser"]


class Role(enum.StrEnum):
    editor = "editor"  # compose and send
    viewer = "viewer"  # read only: ops


class StaffUser(Base):
    __tablename__ = "staff_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.viewer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: The TOTP secret (encrypted with a key derived from MAILER_SECRET_KEY), once the
    #: staff member set up a second factor; None without one.
    totp_secret: Mapped[str | None] = mapped_column(Text)
    totp_enabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: The time step of the last code accepted: a code works once, never twice.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)


class StaffSession(Base):
    __tablename__ = "staff_session"

    #: sha256 of the session cookie value: a stolen database cannot log anyone in.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id", ondelete="CASCADE"),
                                         index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    #: The last request of the session (written at most once a minute): a session
    #: nobody used for MAILER_SESSION_IDLE_MINUTES is over.
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[StaffUser] = relationship()


class StaffRecoveryCode(Base):
    """One of the ten codes that log in without the authenticator app, once each."""

    __tablename__ = "staff_recovery_code"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id", ondelete="CASCADE"),
                                         index=True)
    #: sha256 of the code (80 random bits: no dictionary to try).
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ScheduledDraft(Base):
    """One run of the bi-monthly schedule and what it did.

    The slot (the run's date in the association's time zone) is unique: a beat task that is
    delivered twice, or runs on two workers at once, drafts one edition.
    """

    __tablename__ = "scheduled_draft"

    slot: Mapped[str] = mapped_column(String(32), primary_key=True)
    ran_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    edition_id: Mapped[int | None] = mapped_column(ForeignKey("edition.id", ondelete="SET NULL"))
    #: What the run did, in words: "drafted edition 4 (6 articles)", "no article…".
    outcome: Mapped[str] = mapped_column(Text, default="")
