"""Staff accounts: creating them, their passwords (argon2), and checking a login.

A login that fails for any reason (unknown address, wrong password, disabled account)
answers the same and costs about the same: an unknown address is checked against a dummy
hash, so neither the answer nor its timing tells whether an account exists. There is no
per-account lock-out (a stranger could hold it): repeated failures are slowed down per
client address and per (address, account) by ``throttle.py``, before this is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.db import utcnow
from mailer.staff.audit import record
from mailer.staff.models import Role, StaffUser
from mailer.subscribers.addresses import InvalidAddress, normalise

MIN_PASSWORD = 10


class AccountError(Exception):
    """A staff account cannot be created or changed as asked; the message says why."""


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    # argon2-cffi's defaults (RFC 9106's second recommended profile: 64 MiB, 3 passes).
    return PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash("not a real password, only here to spend the same time")


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher().hash(password)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise AccountError("the password is longer than 1,024 characters")


def _email(raw: str) -> str:
    try:
        return normalise(raw)[1]
    except InvalidAddress as exc:
        raise AccountError(str(exc)) from None


def _role(raw: str) -> Role:
    try:
        return Role(raw)
    except ValueError:
        raise AccountError(f"the role must be one of {', '.join(r.value for r in Role)}, "
                           f"not {raw!r}") from None


def find(session: Session, email: str) -> StaffUser | None:
    try:
        key = normalise(email)[1]
    except InvalidAddress:
        return None
    return session.scalars(select(StaffUser).where(func.lower(StaffUser.email) == key)).first()


def create(session: Session, *, email: str, password: str, role: str, by: str) -> StaffUser:
    address = _email(email)
    if find(session, address) is not None:
        raise AccountError(f"there is a staff account for {address} already")
    user = StaffUser(email=address, password_hash=hash_password(password), role=_role(role),
                     active=True)
    session.add(user)
    session.flush()
    record(session, actor=by, action="staff.create", target=f"staff:{address}",
           detail={"role": user.role})
    return user


def set_password(session: Session, user: StaffUser, password: str, *, by: str) -> None:
    from mailer.staff.sessions import end_all_sessions

    user.password_hash = hash_password(password)
    end_all_sessions(session, user)  # whoever knew the old one is logged out
    record(session, actor=by, action="staff.password", target=f"staff:{user.email}")


def set_role(session: Session, user: StaffUser, role: str, *, by: str) -> None:
    user.role = _role(role)
    record(session, actor=by, action="staff.role", target=f"staff:{user.email}",
           detail={"role": user.role})


def set_active(session: Session, user: StaffUser, active: bool, *, by: str) -> None:
    from mailer.staff.sessions import end_all_sessions

    user.active = active
    if not active:
        end_all_sessions(session, user)
    record(session, actor=by, action="staff.enable" if active else "staff.disable",
           target=f"staff:{user.email}")


def unlock(session: Session, user: StaffUser, *, by: str) -> int:
    """Forget the failed logins counted against this account from every address (the
    throttles' per-account counters); how many addresses had some."""
    from mailer.staff import throttle

    forgotten = throttle.forget_account(user.email)
    record(session, actor=by, action="staff.unlock", target=f"staff:{user.email}",
           detail={"addresses": forgotten})
    return forgotten


def editors(session: Session) -> list[StaffUser]:
    return list(session.scalars(
        select(StaffUser).where(StaffUser.role == Role.editor, StaffUser.active.is_(True))
        .order_by(StaffUser.email)))


def everyone(session: Session) -> list[StaffUser]:
    return list(session.scalars(select(StaffUser).order_by(StaffUser.email)))


# --- logging in --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    user: StaffUser | None
    #: For the audit log and the operators, never shown to the person logging in:
    #: ok, second-factor (the password was right; a code is asked for next), unknown,
    #: wrong-password, disabled.
    reason: str


def authenticate(session: Session, *, email: str, password: str, ip: str = "") -> LoginResult:
    """Check a login's password. A failure is recorded in the audit log; a success is
    recorded by :func:`complete_login` (at once, or after the second factor)."""
    user = find(session, email) if len(email) <= 320 else None
    if user is None:
        _verify(_dummy_hash(), password)
        record(session, actor=email[:320] or "(empty)", action="login.failed", target="",
               detail={"reason": "unknown", "ip": ip})
        return LoginResult(None, "unknown")
    good = _verify(user.password_hash, password)
    reason = "disabled" if not user.active else "wrong-password" if not good else ""
    if reason:
        record(session, actor=user.email, action="login.failed", target=f"staff:{user.email}",
               detail={"reason": reason, "ip": ip})
        return LoginResult(None, reason)
    if _hasher().check_needs_rehash(user.password_hash):
        user.password_hash = _hasher().hash(password)
    if user.totp_secret:
        return LoginResult(user, "second-factor")
    complete_login(session, user, ip=ip)
    return LoginResult(user, "ok")


def complete_login(session: Session, user: StaffUser, *, ip: str,
                   second_factor: str | None = None) -> None:
    user.last_login_at = utcnow()
    detail: dict[str, object] = {"ip": ip}
    if second_factor:
        detail["second_factor"] = second_factor
    record(session, actor=user.email, action="login", target=f"staff:{user.email}",
           detail=detail)


def fail_second_factor(session: Session, user: StaffUser, *, ip: str) -> None:
    record(session, actor=user.email, action="login.failed", target=f"staff:{user.email}",
           detail={"reason": "wrong-code", "ip": ip})


def _verify(hash_: str, password: str) -> bool:
    try:
        return _hasher().verify(hash_, password[:1024])
    except (VerificationError, InvalidHashError):
        return False
