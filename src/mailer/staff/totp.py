"""The optional second factor of a staff login: TOTP (RFC 6238) and ten recovery codes.

- Setting it up: the admin shows a new secret as a QR code (drawn here as SVG, no
  third-party request) and as text; the first code from the app turns it on, and ten
  recovery codes are shown once.
- The secret is stored encrypted (Fernet, keyed from MAILER_SECRET_KEY; the keys in
  MAILER_OLD_SECRET_KEYS still decrypt, so a key rotation keeps the second factors).
- A code is accepted for the current 30-second step and the one before or after (clocks
  drift), and only once: the step of the last code accepted is kept, and a code of that
  step or an earlier one is refused (a code seen over a shoulder is worth nothing).
- Recovery codes are 80 random bits each, stored as their SHA-256, and each works once
  (a conditional UPDATE: two requests with one code log in once).
- A lost device: ``mailer staff totp reset EMAIL`` (audited) turns it off and ends the
  account's sessions; the staff member sets it up again after logging in.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from functools import lru_cache

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mailer.db import utcnow
from mailer.staff.audit import record
from mailer.staff.models import StaffRecoveryCode, StaffUser

RECOVERY_CODES = 10
#: Steps before and after the current one whose codes are still accepted.
DRIFT_STEPS = 1


class TOTPError(Exception):
    """The second factor cannot be set up or used as asked; the message says why."""


# --- the secret, at rest ----------------------------------------------------------------------


@lru_cache(maxsize=4)
def _fernet(keys: tuple[bytes, ...]) -> MultiFernet:
    def derive(key: bytes) -> Fernet:
        raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"mailer staff totp secret").derive(key)
        return Fernet(base64.urlsafe_b64encode(raw))
    return MultiFernet([derive(key) for key in keys])


def _box(keys: Sequence[bytes]) -> MultiFernet:
    return _fernet(tuple(keys))


def secret_of(user: StaffUser, *, keys: Sequence[bytes]) -> str | None:
    """The user's TOTP secret, or None when no second factor is set up (or it can no longer
    be read: ``keys``, the service's secrets (``Settings.all_secrets``, the current one
    first), no longer hold the one it was stored with)."""
    if not user.totp_secret:
        return None
    try:
        return _box(keys).decrypt(user.totp_secret.encode()).decode()
    except InvalidToken:
        return None


def has_second_factor(user: StaffUser) -> bool:
    return bool(user.totp_secret)


# --- setting it up ------------------------------------------------------------------------------


def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits, as RFC 4226 recommends


def provisioning_uri(secret: str, email: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads, its entry named ``issuer`` (the list
    name)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def qr_svg(data: str) -> str:
    """The QR code of ``data`` as an inline SVG element (drawn here: no image service)."""
    return str(segno.make(data, error="m").svg_inline(scale=5, border=2, dark="#000",
                                                      light="#fff", title="QR code"))


def enable(session: Session, user: StaffUser, secret: str, code: str, *,
           keys: Sequence[bytes]) -> list[str]:
    """Turn the second factor on once ``code`` proves the app has ``secret`` (stored sealed
    with the first of ``keys``); the recovery codes, to be shown once. Raises TOTPError."""
    if has_second_factor(user):
        raise TOTPError("Two-factor authentication is on already.")
    step = _matching_step(secret, code)
    if step is None:
        raise TOTPError("That code is not the one the app shows now. Check the phone's clock, "
                        "and type the six digits the app shows for this account.")
    user.totp_secret = _box(keys).encrypt(secret.encode()).decode()
    user.totp_enabled_at = utcnow()
    user.totp_last_step = step
    codes = _new_recovery_codes(session, user)
    record(session, actor=user.email, action="staff.totp.enable", target=f"staff:{user.email}")
    return codes


def turn_off(session: Session, user: StaffUser, *, by: str) -> bool:
    """Remove the second factor and its recovery codes; False when there was none."""
    had = has_second_factor(user)
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    session.execute(delete(StaffRecoveryCode).where(StaffRecoveryCode.user_id == user.id))
    if had:
        record(session, actor=by, action="staff.totp.disable", target=f"staff:{user.email}")
    return had


def recovery_codes_left(session: Session, user: StaffUser) -> int:
    return int(session.scalar(select(func.count()).select_from(StaffRecoveryCode).where(
        StaffRecoveryCode.user_id == user.id, StaffRecoveryCode.used_at.is_(None))) or 0)


# --- logging in ---------------------------------------------------------------------------------


def verify(session: Session, user: StaffUser, code: str, *, keys: Sequence[bytes]) -> str | None:
    """Check the second factor of a login: "totp" or "recovery-code" for what worked (and is
    now used up), None when nothing did."""
    code = "".join(code.split())
    secret = secret_of(user, keys=keys)
    if secret is None:
        return None
    if code.isascii() and code.isdigit() and len(code) == 6:
        step = _matching_step(secret, code)
        if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
            return None
        # Conditional: two logins with one code at once, one wins.
        won = session.execute(
            update(StaffUser).where(StaffUser.id == user.id,
                                    (StaffUser.totp_last_step.is_(None))
                                    | (StaffUser.totp_last_step < step))
            .values(totp_last_step=step))
        session.refresh(user)
        return "totp" if getattr(won, "rowcount", 0) == 1 else None
    used = session.execute(
        update(StaffRecoveryCode)
        .where(StaffRecoveryCode.user_id == user.id,
               StaffRecoveryCode.code_hash == _hash(code),
               StaffRecoveryCode.used_at.is_(None))
        .values(used_at=utcnow()))
    return "recovery-code" if getattr(used, "rowcount", 0) == 1 else None


def _matching_step(secret: str, code: str, at: dt.datetime | None = None) -> int | None:
    """The time step whose code ``code`` is (this one, or one step off), or None."""
    code = "".join(code.split())
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now = totp.timecode(at or utcnow())
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
            return step
    return None


def _new_recovery_codes(session: Session, user: StaffUser) -> list[str]:
    session.execute(delete(StaffRecoveryCode).where(StaffRecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 80 bits
        codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
        session.add(StaffRecoveryCode(user_id=user.id, code_hash=_hash(codes[-1])))
    session.flush()
    return codes


def _hash(code: str) -> str:
    normal = "".join(ch for ch in code.casefold() if ch.isalnum())
    return hashlib.sha256(normal.encode("utf-8", "surrogatepass")).hexdigest()
