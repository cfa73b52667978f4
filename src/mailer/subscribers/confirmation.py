"""Confirmation: the double opt-in's links, their check and use, and the bookkeeping of
the mails that carry them.

A sign-up leaves a token (``new_token``); the confirmations worker claims it, sends its
mail and marks it sent (``claim_confirmation_mail``, ``mark_confirmation_sent``,
``release_confirmation_mail``; ``mailer.subscribers.confirmation_mail``); the sweeper
queues again what a lost task never sent (``confirmations_to_resend``); the reader's click
is checked and used (``check_confirmation``, ``confirm``). A link confirms the lists its
mail named (``ConfirmationToken.lists``); a newer link for the same lists retires it; at
most one confirmation mail a day goes to an address. Never commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from mailer import tasks
from mailer.config import SignupSettings
from mailer.db import utcnow
from mailer.lists.models import MailingList, Subscription, SubscriptionStatus
from mailer.lists.service import consent_for, slugs_of
from mailer.subscribers.models import (
    ConfirmationToken,
    ConsentEventKind,
    Subscriber,
    Suppression,
)
from mailer.subscribers.records import record_event, rowcount
from mailer.tokens import random_id, sign, verify
from mailer.webhooks.events import CONFIRMED, emit_for_subscriber

#: A confirmation link's signature, in base64 characters (258 bits).
CONFIRM_SIGNATURE = 43
#: At most one confirmation mail per address in this interval.
MAIL_INTERVAL = dt.timedelta(days=1)


def link_mailed_today(session: Session, subscriber: Subscriber) -> bool:
    """Does the reader hold a working link whose mail went out in the last day?"""
    now = utcnow()
    return bool(session.scalar(select(exists().where(
        ConfirmationToken.subscriber_id == subscriber.id,
        ConfirmationToken.used_at.is_(None),
        ConfirmationToken.expires_at > now,
        ConfirmationToken.sent_at > now - MAIL_INTERVAL,
    ))))


# --- confirmation tokens ----------------------------------------------------------------


def new_token(session: Session, subscriber: Subscriber, *, lists: Sequence[int],
              signup: SignupSettings, hold: bool = False) -> ConfirmationToken | None:
    """A new confirmation link for ``lists``, valid ``signup.confirmation_ttl_days``; None
    when a link mailed in the last day names them all already (it stays the one to click).

    That link is kept, and the new one names only what it lacks (its mail waits for the
    daily limit); any other open link is retired and its lists join the new one's, so a
    reader holds at most one link per list. ``hold``: the address is over its daily limit
    of sign-ups, so the new link's mail is not sent before a day has passed (the sweeper
    sends it then)."""
    now = utcnow()
    open_links = list(session.scalars(select(ConfirmationToken).where(
        ConfirmationToken.subscriber_id == subscriber.id,
        ConfirmationToken.used_at.is_(None))))
    kept = [t for t in open_links if t.sent_at is not None and t.expires_at > now
            and t.sent_at > now - MAIL_INTERVAL]
    covered = {i for t in kept for i in (t.lists or [])}
    wanted = set(lists) - covered
    if not wanted:
        return None
    for old in open_links:
        if old not in kept:
            wanted |= set(old.lists or []) - covered
            old.used_at = now
    token = ConfirmationToken(
        subscriber_id=subscriber.id,
        lists=sorted(wanted),
        nonce=random_id(),
        created_at=now,
        expires_at=now + dt.timedelta(days=signup.confirmation_ttl_days),
        claimed_until=now + MAIL_INTERVAL if hold else None,
    )
    session.add(token)
    session.flush()
    return token


def drop_from_open_links(session: Session, subscriber: Subscriber, lists: Sequence[int],
                         now: dt.datetime) -> None:
    """Open links name these lists no more (the reader left them, or is confirmed on them
    already): a link kept in the inbox must not confirm a list the reader has left. A link
    left naming nothing is retired."""
    gone = set(lists)
    for token in session.scalars(select(ConfirmationToken).where(
            ConfirmationToken.subscriber_id == subscriber.id,
            ConfirmationToken.used_at.is_(None)).with_for_update()):
        kept = [i for i in (token.lists or []) if i not in gone]
        if kept != (token.lists or []):
            token.lists = kept
            if not kept:
                token.used_at = now


def retire_open_links(session: Session, subscriber: Subscriber, now: dt.datetime) -> None:
    session.execute(
        update(ConfirmationToken)
        .where(ConfirmationToken.subscriber_id == subscriber.id,
               ConfirmationToken.used_at.is_(None))
        .values(used_at=now)
    )


def confirmation_token_value(token: ConfirmationToken, *, keys: Sequence[bytes]) -> str:
    signature = sign("confirm", f"{token.id}.{token.nonce}", CONFIRM_SIGNATURE, keys=keys)
    return f"{token.id}.{signature}"


def confirmation_url(token: ConfirmationToken, *, base_url: str, keys: Sequence[bytes]) -> str:
    return f"{base_url}/confirm/{confirmation_token_value(token, keys=keys)}"


@dataclass(frozen=True)
class TokenCheck:
    status: str  # ok, invalid, expired, used
    token: ConfirmationToken | None = None
    subscriber: Subscriber | None = None


def check_confirmation(session: Session, value: str, *, keys: Sequence[bytes]) -> TokenCheck:
    """What a confirmation link is worth, without changing anything (the GET page); ``keys``
    (``Settings.all_secrets``) check its signature."""
    token_id, _, signature = value.partition(".")
    # isascii: str.isdigit() also accepts "²" and other digits int() refuses.
    if not (token_id.isascii() and token_id.isdigit()) or len(token_id) > 9:
        return TokenCheck("invalid")
    if len(signature) != CONFIRM_SIGNATURE:  # tokens.verify would accept a prefix
        return TokenCheck("invalid")
    token = session.get(ConfirmationToken, int(token_id))
    if token is None or not verify("confirm", f"{token.id}.{token.nonce}", signature, keys=keys):
        return TokenCheck("invalid")
    subscriber = session.get(Subscriber, token.subscriber_id)
    if subscriber is None:
        return TokenCheck("invalid")
    if token.used_at is not None or not pending_lists(session, token):
        return TokenCheck("used", token, subscriber)
    if token.expires_at <= utcnow():
        return TokenCheck("expired", token, subscriber)
    return TokenCheck("ok", token, subscriber)


def confirm(session: Session, value: str, *, ip: str | None, user_agent: str | None,
            signup: SignupSettings, keys: Sequence[bytes]) -> TokenCheck:
    """Confirm the subscriptions a link names that are still pending (the POST of its
    Confirm button): the consent is to each list's version (``signup.consent_version``
    where it has none); a welcome mail follows if ``signup`` says."""
    check = check_confirmation(session, value, keys=keys)
    if check.status != "ok" or check.token is None or check.subscriber is None:
        return check
    now = utcnow()
    # The conditional update makes a double submit (two tabs, a retry) confirm once.
    claimed = rowcount(session.execute(
        update(ConfirmationToken)
        .where(ConfirmationToken.id == check.token.id, ConfirmationToken.used_at.is_(None))
        .values(used_at=now)
    ))
    if not claimed:
        return TokenCheck("used", check.token, check.subscriber)
    subscriber = check.subscriber
    confirmed = []
    for held in pending_lists(session, check.token, lock=True):
        held.status = SubscriptionStatus.confirmed
        held.confirmed_at = now
        held.unsubscribed_at = None
        held.updated_at = now
        lst = session.get(MailingList, held.list_id)
        assert lst is not None
        record_event(session, subscriber, ConsentEventKind.confirmed, at=now, ip=ip,
                     user_agent=(user_agent or "")[:500] or None,
                     consent_version=consent_for(lst, signup)[0], list_id=lst.id)
        confirmed.append(lst.id)
    if not confirmed:
        # What the link named was ended (left, or purged) since it was checked: nothing is
        # confirmed, so nothing is lifted, announced or welcomed.
        return TokenCheck("used", check.token, subscriber)
    # A fresh double opt-in is fresh consent: it lifts an earlier suppression (an erasure,
    # a complaint), which is recorded.
    suppression = session.scalars(
        select(Suppression).where(Suppression.address_hash == subscriber.address_hash)
    ).first()
    if suppression is not None:
        record_event(session, subscriber, ConsentEventKind.unsuppressed,
                     detail={"reason": suppression.reason, "by": "double opt-in"})
        session.delete(suppression)
    emit_for_subscriber(session, CONFIRMED, subscriber, lists=slugs_of(session, confirmed))
    if signup.welcome_mail:  # sent once this transaction has committed
        tasks.publish(tasks.SEND_WELCOME, subscriber.id, check.token.id, session=session)
    return TokenCheck("ok", check.token, subscriber)


def pending_lists(session: Session, token: ConfirmationToken, *,
                  lock: bool = False) -> list[Subscription]:
    """The subscriptions the link names that are still waiting for it, in list order."""
    if not token.lists:
        return []
    query = (select(Subscription)
             .where(Subscription.subscriber_id == token.subscriber_id,
                    Subscription.list_id.in_(token.lists),
                    Subscription.status == SubscriptionStatus.pending)
             .order_by(Subscription.list_id))
    return list(session.scalars(query.with_for_update() if lock else query))


def _pending_anywhere(subscriber_id: Any) -> Any:
    return exists().where(Subscription.subscriber_id == subscriber_id,
                          Subscription.status == SubscriptionStatus.pending)


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
    if subscriber is None or not session.scalar(select(_pending_anywhere(subscriber_id))):
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
    claimed = rowcount(session.execute(
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
    # The subscriber first, as a sign-up locks them (then their links): the events written
    # below would otherwise wait for the subscriber while holding the link a sign-up waits
    # for (a deadlock PostgreSQL ends by failing one of the two).
    subscriber = session.scalars(select(Subscriber).where(
        Subscriber.id == token.subscriber_id).with_for_update(key_share=True)).first()
    token.sent_at = utcnow()
    token.message_id = message_id
    token.last_error = None
    if subscriber is not None:
        for list_id in token.lists or []:
            record_event(session, subscriber, ConsentEventKind.confirmation_sent,
                         message_id=message_id, at=token.sent_at, list_id=list_id)


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
        .where(_pending_anywhere(ConfirmationToken.subscriber_id),
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
