"""Service functions of the subscription manager.

They take a session and keyword arguments, know nothing of the web or of Celery, and never
commit: the caller owns the transaction. Every change of consent writes a ConsentEvent.
A change someone makes to the suppression list, and an erasure, also writes its audit
entry (who: ``by``, a staff member's address or ``cli:<user>``); the system's own
suppressions (bounces, complaints) are told by their consent events and bounce rows.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import exists, select, update
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer import tasks
from mailer.audit import record
from mailer.config import get_settings
from mailer.db import utcnow
from mailer.subscribers.addresses import MAX_LENGTH as MAX_ADDRESS_LENGTH
from mailer.subscribers.addresses import normalise
from mailer.subscribers.models import (
    ConfirmationToken,
    ConsentEvent,
    ConsentEventKind,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from mailer.tokens import address_hash, random_id, sign, verify

#: Signature lengths in base64 characters: 258 bits for a confirmation link, 132 bits for
#: an unsubscribe link (it has to stay short in a List-Unsubscribe header).
CONFIRM_SIGNATURE = 43
UNSUBSCRIBE_SIGNATURE = 22
#: At most one confirmation mail per address in this interval.
MAIL_INTERVAL = dt.timedelta(days=1)


def _rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE changed (the conditional updates below are our locks)."""
    return cast(CursorResult[Any], result).rowcount


# --- consent events -----------------------------------------------------------------------


def record_event(
    session: Session, subscriber: Subscriber, kind: ConsentEventKind, **fields: Any
) -> ConsentEvent:
    event = ConsentEvent(
        subscriber_id=subscriber.id, address_hash=subscriber.address_hash, kind=kind, **fields
    )
    session.add(event)
    return event


# --- sign-up --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    first_name: str = ""
    last_name: str = ""
    organisation: str = ""
    country: str = ""


@dataclass(frozen=True)
class Origin:
    """Where a consent came from: the form, the request's IP and user agent."""

    source: str = "web"
    ip: str | None = None
    user_agent: str | None = None


def sign_up(session: Session, *, email: str, profile: Profile, origin: Origin,
            may_mail: bool = True) -> Subscriber:
    """Record a sign-up. New, pending and unsubscribed addresses get a confirmation token
    whose mail the confirmations worker sends; a confirmed one changes nothing.

    A pending address whose confirmation mail went out in the last day keeps that link
    (and gets no second mail today): a second press of the form must not kill the link
    that is already in the reader's inbox. With ``may_mail`` false (the address is over
    its daily limit) no new link is made at all, so no mail goes out; everything else
    happens as usual.

    Raises InvalidAddress. The caller answers the same way whatever happened here.
    """
    address, key = normalise(email)
    settings = get_settings()
    consent = {
        "consent_version": settings.consent_version,
        "consent_text": settings.consent_text,
        "source": origin.source[:100],
        "ip": (origin.ip or "")[:64] or None,
        "user_agent": (origin.user_agent or "")[:500] or None,
    }
    # Every kind of address goes through the same steps (find or create the row, write
    # an event, settle the link) so that the answer takes as long for a subscribed address
    # as for a new one: its timing must not tell an outsider who is subscribed.
    subscriber = _for_update(session, key)
    if subscriber is None:
        subscriber = _create_pending(session, address, key, profile, origin)
        if subscriber is None:  # a concurrent sign-up for the same address won the race
            subscriber = _for_update(session, key)
            assert subscriber is not None
        else:
            record_event(session, subscriber, ConsentEventKind.subscribed, **consent)
            if may_mail:
                _new_token(session, subscriber)
            return subscriber
    if subscriber.status == SubscriberStatus.confirmed:
        # Nothing changes and no mail goes out; the submission is written down (who tried)
        # and any stray open link is retired, the same work as for the other kinds.
        record_event(session, subscriber, ConsentEventKind.already_subscribed, **consent)
        _link_mailed_today(session, subscriber)
        retire_open_links(session, subscriber, utcnow())
        session.flush()
        return subscriber
    _apply_profile(subscriber, profile)
    subscriber.email = address
    # Set by hand: the 14-day purge counts from the latest sign-up, even one that changed
    # no column (the ORM's onupdate fires only for a row that changed).
    subscriber.updated_at = utcnow()
    if subscriber.status == SubscriberStatus.unsubscribed:
        subscriber.status = SubscriberStatus.pending
        record_event(session, subscriber, ConsentEventKind.resubscribed, **consent)
    else:
        record_event(session, subscriber, ConsentEventKind.subscribed, **consent)
    if not _link_mailed_today(session, subscriber) and may_mail:
        _new_token(session, subscriber)
    return subscriber


def _link_mailed_today(session: Session, subscriber: Subscriber) -> bool:
    """Does the reader hold a working link whose mail went out in the last day?"""
    now = utcnow()
    return bool(session.scalar(select(exists().where(
        ConfirmationToken.subscriber_id == subscriber.id,
        ConfirmationToken.used_at.is_(None),
        ConfirmationToken.expires_at > now,
        ConfirmationToken.sent_at > now - MAIL_INTERVAL,
    ))))


def _for_update(session: Session, key: str) -> Subscriber | None:
    return session.scalars(
        select(Subscriber).where(Subscriber.email_key == key).with_for_update()
    ).first()


def _create_pending(
    session: Session, address: str, key: str, profile: Profile, origin: Origin
) -> Subscriber | None:
    subscriber = Subscriber(
        public_id=random_id(),
        email=address,
        email_key=key,
        address_hash=address_hash(key),
        status=SubscriberStatus.pending,
        source=origin.source[:100],
    )
    _apply_profile(subscriber, profile)
    try:
        with session.begin_nested():
            session.add(subscriber)
            session.flush()
    except IntegrityError:
        return None
    return subscriber


def _apply_profile(subscriber: Subscriber, profile: Profile) -> None:
    # The web form refuses what would be changed here; imports and other callers get the
    # same bounds and no line break in any case.
    subscriber.first_name = clean_text(profile.first_name, FIELD_LIMITS["first_name"])
    subscriber.last_name = clean_text(profile.last_name, FIELD_LIMITS["last_name"])
    subscriber.organisation = clean_text(profile.organisation, FIELD_LIMITS["organisation"])
    subscriber.country = clean_text(profile.country, FIELD_LIMITS["country"])


#: The longest value each field of the sign-up form takes (the columns' sizes; the form's
#: ``maxlength`` says the same).
FIELD_LIMITS = {"email": MAX_ADDRESS_LENGTH, "first_name": 100, "last_name": 100,
                "organisation": 200, "country": 100}


def profile_problems(values: Mapping[str, str]) -> dict[str, str]:
    """What is wrong with the name fields of a sign-up, field by field, in words for the
    form. A value is refused rather than cut or cleaned: a name that is too long or holds a
    line break is a mistake (or an attack) the person should see, not a surprise later."""
    problems: dict[str, str] = {}
    for name in ("first_name", "last_name", "organisation", "country"):
        value, limit = values.get(name, ""), FIELD_LIMITS[name]
        if any(unicodedata.category(ch) in _UNPRINTABLE for ch in value):
            problems[name] = ("This cannot contain line breaks, tabs or other invisible "
                              "control characters.")
        elif len(value) > limit:
            problems[name] = f"Please keep this to {limit} characters (it has {len(value):,})."
    return problems


def clean_text(value: str | None, limit: int) -> str:
    """No control characters or line separators (CR, LF, NEL, U+2028 would let a name
    break a header line or a text part), trimmed, bounded."""
    value = "".join(
        " " if unicodedata.category(ch) in _UNPRINTABLE else ch for ch in (value or "")
    )
    return " ".join(value.split())[:limit]


#: Control characters, surrogates, private use and unassigned code points, line and
#: paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})


# --- confirmation tokens ----------------------------------------------------------------


def _new_token(session: Session, subscriber: Subscriber) -> ConfirmationToken:
    now = utcnow()
    # Only the newest link works: older unused ones are retired.
    retire_open_links(session, subscriber, now)
    token = ConfirmationToken(
        subscriber_id=subscriber.id,
        nonce=random_id(),
        created_at=now,
        expires_at=now + dt.timedelta(days=get_settings().confirmation_ttl_days),
    )
    session.add(token)
    session.flush()
    return token


def retire_open_links(session: Session, subscriber: Subscriber, now: dt.datetime) -> None:
    session.execute(
        update(ConfirmationToken)
        .where(ConfirmationToken.subscriber_id == subscriber.id,
               ConfirmationToken.used_at.is_(None))
        .values(used_at=now)
    )


def confirmation_token_value(token: ConfirmationToken) -> str:
    return f"{token.id}.{sign('confirm', f'{token.id}.{token.nonce}', CONFIRM_SIGNATURE)}"


def confirmation_url(token: ConfirmationToken) -> str:
    return f"{get_settings().base_url}/confirm/{confirmation_token_value(token)}"


@dataclass(frozen=True)
class TokenCheck:
    status: str  # ok, invalid, expired, used
    token: ConfirmationToken | None = None
    subscriber: Subscriber | None = None


def check_confirmation(session: Session, value: str) -> TokenCheck:
    """What a confirmation link is worth, without changing anything (the GET page)."""
    token_id, _, signature = value.partition(".")
    # isascii: str.isdigit() also accepts "²" and other digits int() refuses.
    if not (token_id.isascii() and token_id.isdigit()) or len(token_id) > 9:
        return TokenCheck("invalid")
    if len(signature) != CONFIRM_SIGNATURE:  # tokens.verify would accept a prefix
        return TokenCheck("invalid")
    token = session.get(ConfirmationToken, int(token_id))
    if token is None or not verify("confirm", f"{token.id}.{token.nonce}", signature):
        return TokenCheck("invalid")
    subscriber = session.get(Subscriber, token.subscriber_id)
    if subscriber is None:
        return TokenCheck("invalid")
    if token.used_at is not None or subscriber.status != SubscriberStatus.pending:
        return TokenCheck("used", token, subscriber)
    if token.expires_at <= utcnow():
        return TokenCheck("expired", token, subscriber)
    return TokenCheck("ok", token, subscriber)


def confirm(session: Session, value: str, *, ip: str | None, user_agent: str | None) -> TokenCheck:
    """Confirm the subscription a link belongs to (the POST of its Confirm button)."""
    check = check_confirmation(session, value)
    if check.status != "ok" or check.token is None or check.subscriber is None:
        return check
    now = utcnow()
    # The conditional update makes a double submit (two tabs, a retry) confirm once.
    claimed = _rowcount(session.execute(
        update(ConfirmationToken)
        .where(ConfirmationToken.id == check.token.id, ConfirmationToken.used_at.is_(None))
        .values(used_at=now)
    ))
    if not claimed:
        return TokenCheck("used", check.token, check.subscriber)
    subscriber = check.subscriber
    subscriber.status = SubscriberStatus.confirmed
    subscriber.confirmed_at = now
    subscriber.unsubscribed_at = None
    record_event(session, subscriber, ConsentEventKind.confirmed, at=now, ip=ip,
                 user_agent=(user_agent or "")[:500] or None,
                 consent_version=get_settings().consent_version)
    # A fresh double opt-in is fresh consent: it lifts an earlier suppression (an erasure,
    # a complaint), which is recorded.
    suppression = session.scalars(
        select(Suppression).where(Suppression.address_hash == subscriber.address_hash)
    ).first()
    if suppression is not None:
        record_event(session, subscriber, ConsentEventKind.unsuppressed,
                     detail={"reason": suppression.reason, "by": "double opt-in"})
        session.delete(suppression)
    if get_settings().welcome_mail:  # sent once this transaction has committed
        tasks.publish(tasks.SEND_WELCOME, subscriber.id, check.token.id, session=session)
    return TokenCheck("ok", check.token, subscriber)


# --- the confirmation mail (used by the confirmations worker) ------------------------------


def claim_confirmation_mail(
    session: Session, subscriber_id: int, *, lease: dt.timedelta = dt.timedelta(minutes=5)
) -> ConfirmationToken | None:
    """The token whose mail this worker should send now, claimed; or None (nothing to do).

    Nothing to do: the subscriber is gone or no longer pending, the newest token was sent
    already, has expired, is claimed by another worker, or a confirmation mail went to this
    address in the last 24 hours (at most one a day).
    """
    now = utcnow()
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.status != SubscriberStatus.pending:
        return None
    day_ago = now - MAIL_INTERVAL
    recent = session.scalar(
        select(exists().where(ConfirmationToken.subscriber_id == subscriber_id,
                              ConfirmationToken.sent_at > day_ago))
    )
    if recent:
        return None
    token = session.scalars(
        select(ConfirmationToken)
        .where(ConfirmationToken.subscriber_id == subscriber_id,
               ConfirmationToken.used_at.is_(None),
               ConfirmationToken.sent_at.is_(None),
               ConfirmationToken.expires_at > now)
        .order_by(ConfirmationToken.id.desc())
    ).first()
    if token is None:
        return None
    claimed = _rowcount(session.execute(
        update(ConfirmationToken)
        .where(ConfirmationToken.id == token.id, ConfirmationToken.sent_at.is_(None),
               (ConfirmationToken.claimed_until.is_(None))
               | (ConfirmationToken.claimed_until < now))
        .values(claimed_until=now + lease)
    ))
    return token if claimed else None


def mark_confirmation_sent(session: Session, token_id: int, message_id: str) -> None:
    token = session.get(ConfirmationToken, token_id)
    if token is None or token.sent_at is not None:
        return
    token.sent_at = utcnow()
    token.message_id = message_id
    token.last_error = None
    subscriber = session.get(Subscriber, token.subscriber_id)
    if subscriber is not None:
        record_event(session, subscriber, ConsentEventKind.confirmation_sent,
                     message_id=message_id, at=token.sent_at)


def release_confirmation_mail(
    session: Session, token_id: int, error: str, *, final: bool,
    retry_at: dt.datetime | None = None,
) -> None:
    """A send failed: keep the claim until ``retry_at`` (the task's own retry takes it
    then; the sweeper leaves it alone until then), or (final) for good so nobody retries."""
    token = session.get(ConfirmationToken, token_id)
    if token is None:
        return
    token.last_error = error[:2000]
    token.claimed_until = token.expires_at if final else retry_at


def confirmations_to_resend(session: Session, *, older_than: dt.timedelta) -> list[int]:
    """Pending subscribers whose confirmation mail never went out (a lost task, a crash).

    Readers mailed in the last day are left out: their next mail waits for the daily
    limit, and queueing it every sweep until then would only be refused every time.
    """
    now = utcnow()
    mailed_today = select(ConfirmationToken.subscriber_id).where(
        ConfirmationToken.sent_at > now - MAIL_INTERVAL)
    rows = session.execute(
        select(ConfirmationToken.subscriber_id)
        .join(Subscriber, Subscriber.id == ConfirmationToken.subscriber_id)
        .where(Subscriber.status == SubscriberStatus.pending,
               ConfirmationToken.used_at.is_(None),
               ConfirmationToken.sent_at.is_(None),
               ConfirmationToken.expires_at > now,
               ConfirmationToken.created_at < now - older_than,
               (ConfirmationToken.claimed_until.is_(None))
               | (ConfirmationToken.claimed_until < now),
               ConfirmationToken.subscriber_id.not_in(mailed_today))
        .limit(1000)
    )
    return sorted({r[0] for r in rows})


# --- unsubscribe -----------------------------------------------------------------------------


def unsubscribe_token(subscriber: Subscriber) -> str:
    """Never expires; cannot be forged without the secret key."""
    return _unsubscribe_token(subscriber.public_id)


def _unsubscribe_token(public_id: str) -> str:
    return f"{public_id}.{sign('unsubscribe', public_id, UNSUBSCRIBE_SIGNATURE)}"


def unsubscribe_url(subscriber: Subscriber) -> str:
    return unsubscribe_url_for(subscriber.public_id)


def unsubscribe_url_for(public_id: str) -> str:
    return f"{get_settings().base_url}/unsubscribe/{_unsubscribe_token(public_id)}"


def subscriber_for_unsubscribe(session: Session, token: str) -> Subscriber | None:
    public_id, _, signature = token.partition(".")
    if len(public_id) != 32 or len(signature) != UNSUBSCRIBE_SIGNATURE:
        return None
    if not verify("unsubscribe", public_id, signature):
        return None
    return session.scalars(select(Subscriber).where(Subscriber.public_id == public_id)).first()


#: A test copy's unsubscribe link names the edition instead of a reader ("test-<id>"),
#: signed like a reader's, so that its page can say it came in a test copy. A reader's
#: public id is 32 hex digits: the two can never be taken for each other.
TEST_COPY_PREFIX = "test-"


def public_id_of_test_copy(edition_id: int) -> str:
    return f"{TEST_COPY_PREFIX}{edition_id}"


def edition_of_test_copy(token: str) -> int | None:
    """The edition whose test copy carried this unsubscribe link, or None (not such a link,
    or not signed by us)."""
    public_id, _, signature = token.partition(".")
    number = public_id.removeprefix(TEST_COPY_PREFIX)
    if (not public_id.startswith(TEST_COPY_PREFIX) or not number.isascii()
            or not number.isdigit() or len(number) > 18
            or len(signature) != UNSUBSCRIBE_SIGNATURE):
        return None
    return int(number) if verify("unsubscribe", public_id, signature) else None


def unsubscribe(
    session: Session, subscriber: Subscriber, *, channel: str,
    ip: str | None = None, user_agent: str | None = None,
) -> bool:
    """Unsubscribe; False when there was nothing to change (repeats are idempotent)."""
    now = utcnow()
    changed = _rowcount(session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber.id,
               Subscriber.status != SubscriberStatus.unsubscribed)
        .values(status=SubscriberStatus.unsubscribed, unsubscribed_at=now, updated_at=now)
    ))
    if not changed:
        return False
    # Links still in a pending subscriber's inbox must not re-confirm them.
    retire_open_links(session, subscriber, now)
    session.refresh(subscriber)
    record_event(session, subscriber, ConsentEventKind.unsubscribed, at=now, channel=channel,
                 ip=ip, user_agent=(user_agent or "")[:500] or None)
    return True


# --- suppression --------------------------------------------------------------------------------


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


def unsuppress(session: Session, hash_: str, *, by: str) -> bool:
    suppression = session.scalars(
        select(Suppression).where(Suppression.address_hash == hash_)
    ).first()
    if suppression is None:
        return False
    subscriber = session.scalars(select(Subscriber).where(Subscriber.address_hash == hash_)).first()
    if subscriber is not None:
        record_event(session, subscriber, ConsentEventKind.unsuppressed,
                     detail={"reason": suppression.reason, "by": by})
    _audit(session, by, "suppression.remove", hash_, subscriber,
           {"reason": suppression.reason})
    session.delete(suppression)
    return True


# --- lookup (the export, erasure and purge are in mailer.privacy) -------------------------


def find(session: Session, email: str) -> Subscriber | None:
    _, key = normalise(email)
    return session.scalars(select(Subscriber).where(Subscriber.email_key == key)).first()
