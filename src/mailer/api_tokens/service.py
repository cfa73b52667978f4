"""Making, checking and revoking API tokens. The caller owns the transaction; every change
writes its audit entry (``api_token.create``, ``api_token.revoke``) with who made it."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.api_tokens.models import ApiToken
from mailer.audit import record
from mailer.db import utcnow

#: What a token may be allowed to do (issue 13). A route names the one scope it needs.
#: ``subscribers:import`` makes confirmed subscribers without a confirmation mail: a scope
#: of its own, so that a form's token (``subscribers:write``) can never skip double opt-in.
#: ``articles`` imports articles: a website's publishing hook needs it, and nothing that
#: reaches a reader's inbox (``editions:send``).
SCOPES = ("subscribers:read", "subscribers:write", "subscribers:import", "lists",
          "articles", "editions:read", "editions:send", "bounces:read", "suppressions")
#: Every token begins so: a secret scanner (or a person) recognises one in a log or a repo.
PREFIX = "mlr_"
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: last_used_at is written at most this often per token: a busy client costs no write per
#: request, and the time is still right to the minute.
LAST_USED_EVERY = dt.timedelta(minutes=1)
DEFAULT_RATE_LIMIT = 600


class TokenError(ValueError):
    """A token cannot be made or changed as asked; the message says why."""


class Refusal(StrEnum):
    unknown = "unknown"
    expired = "expired"
    revoked = "revoked"


@dataclass(frozen=True)
class Caller:
    """The holder of a token that was accepted: its name and its scopes."""

    token_id: int
    name: str
    scopes: frozenset[str]
    rate_limit_per_minute: int

    @property
    def actor(self) -> str:
        """How the audit log and the consent record name this caller."""
        return f"api:{self.name}"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def create(session: Session, *, name: str, scopes: list[str], by: str,
           expires_days: int | None = None,
           rate_limit_per_minute: int = DEFAULT_RATE_LIMIT) -> tuple[ApiToken, str]:
    """A new token: the row, and the token itself, which nobody can see again."""
    name = name.strip()
    if not NAME.fullmatch(name):
        raise TokenError("A token's name is 1 to 64 lower-case letters, digits, '.', '_' or "
                         f"'-', beginning with a letter or digit: not {name!r}.")
    wrong = sorted(set(scopes) - set(SCOPES))
    if wrong:
        raise TokenError(f"Unknown scope {', '.join(wrong)}: the scopes are "
                         f"{', '.join(SCOPES)}.")
    if not scopes:
        raise TokenError("A token needs at least one scope.")
    if expires_days is not None and not 1 <= expires_days <= 3660:
        raise TokenError("--expires-days is between 1 and 3660.")
    if not 1 <= rate_limit_per_minute <= 100_000:
        raise TokenError("--rate-limit is between 1 and 100000 requests a minute.")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise TokenError(f"There is a token named {name} already (revoked ones keep their "
                         "name, so the audit log stays unambiguous).")
    value = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    token = ApiToken(name=name, token_hash=digest(value), hint=value[:8],
                     scopes=[s for s in SCOPES if s in scopes], created_at=now, created_by=by,
                     rate_limit_per_minute=rate_limit_per_minute,
                     expires_at=now + dt.timedelta(days=expires_days) if expires_days else None)
    session.add(token)
    session.flush()
    record(session, actor=by, action="api_token.create", target=f"api_token:{name}",
           detail={"scopes": token.scopes, "rate_limit_per_minute": rate_limit_per_minute,
                   "expires_at": token.expires_at.isoformat() if token.expires_at else None})
    return token, value


def authenticate(session: Session, value: str) -> Caller | Refusal:
    """The caller a presented token stands for, or why it is refused; notes its use."""
    if not value.startswith(PREFIX) or len(value) > 200:
        return Refusal.unknown
    token = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest(value))).first()
    if token is None:
        return Refusal.unknown
    now = utcnow()
    if token.revoked_at is not None:
        return Refusal.revoked
    if token.expires_at is not None and token.expires_at <= now:
        return Refusal.expired
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        session.execute(update(ApiToken).where(ApiToken.id == token.id)
                        .values(last_used_at=now))
    return Caller(token.id, token.name, frozenset(token.scopes), token.rate_limit_per_minute)


def revoke(session: Session, name: str, *, by: str) -> ApiToken:
    """Revoke the token ``name`` at once; revoking it again changes nothing."""
    token = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if token is None:
        raise TokenError(f"There is no token named {name}.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        record(session, actor=by, action="api_token.revoke", target=f"api_token:{name}")
    return token


def all_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))
