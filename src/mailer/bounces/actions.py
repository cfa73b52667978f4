"""Acting on a classified bounce: record it with its evidence, then do the one right thing.

- hard: suppress the address at once when the evidence is strong (a 5.1.x before DATA,
  the address echoed with "user unknown", a domain that does not exist); on weak evidence
  (a wording alone, no code, after DATA) only when a second hard or soft bounce of the
  address comes for another edition — see :func:`confirms_weak_hard`;
- complaint: unsubscribe and suppress at once;
- soft: count; ``soft_bounce_limit`` soft bounces on distinct editions within
  ``soft_bounce_days`` with no successful delivery between them suppress (and so does one
  soft bounce after a weak hard one);
- policy: never suppress (the sender's problem) — the operators' alert counter goes up;
- delayed, autoreply, not-a-bounce, unparsed: kept as evidence, nothing else.

Every source (the SMTP replies of a send, DSN mails, ARF reports, provider webhooks)
comes through :func:`record_bounce`, so the rules live in one place. Only a bounce tied to
a known subscriber acts: an unattributed one (a forged VERP token, a stranger's address)
is kept and suppresses nobody. Suppressing writes a consent event (``suppressed``).
The soft-bounce limit and window are the caller's :class:`~mailer.config.BounceSettings`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any, cast

import redis
from sqlalchemy import CursorResult, distinct, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.bounces.classify import STRONG, WEAK, hard_strength
from mailer.bounces.models import Bounce, BounceClass, Trust
from mailer.config import BounceSettings
from mailer.db import publish_after_commit, utcnow
from mailer.deliveries.models import Delivery, DeliveryState
from mailer.redis import get_redis
from mailer.subscribers.models import Subscriber, SuppressionReason
from mailer.subscribers.unsubscribe import unsubscribe
from mailer.suppression.service import suppress
from mailer.webhooks.events import BOUNCE, COMPLAINT, emit

log = logging.getLogger(__name__)

EXCERPT_LIMIT = 8 * 1024

#: Redis counters the operators' alerts read (see :func:`alert_counts`).
ALERT_KEY = "mailer:alerts"

#: Bounce classes that mean "this delivery did not reach the reader".
NOT_DELIVERED = (BounceClass.soft, BounceClass.hard, BounceClass.policy)


def record_bounce(
    session: Session,
    *,
    bounces: BounceSettings,
    bounce_class: BounceClass,
    source: str,
    recipient: str = "",
    status_code: str = "",
    diagnostic: str = "",
    remote_mta: str = "",
    delivery_id: int | None = None,
    edition_id: int | None = None,
    subscriber_id: int | None = None,
    confirmation_token_id: int | None = None,
    attribution: str = "none",
    attribution_note: str = "",
    unverified: str = "",
    claimed_delivery_id: int | None = None,
    claimed_subscriber_id: int | None = None,
    raw_excerpt: str = "",
    fingerprint: str | None = None,
    strength: str | None = None,
) -> Bounce | None:
    """Store a bounce and apply its consequence; ``bounce.action`` says what was done.

    The ties (``delivery_id``, ``edition_id``, ``subscriber_id``) are what acts: a caller
    passes them only for a bounce it verified (a signed token or Message-ID, our own SMTP
    transaction, a provider webhook whose signature checked). An ``unverified`` bounce (its
    reason) passes who it names as ``claimed_*`` instead and acts on nobody.

    ``strength`` is the evidence of a hard bounce, "strong" or "weak", as the parser found
    it; a caller that has only a status and a diagnostic (a provider's event, our own SMTP
    transaction) leaves it out and it is judged from them.

    Returns None when this exact bounce (same fingerprint and recipient) was recorded
    before — a re-import, a redelivered task, a provider's retry — and then does nothing.
    A bounce whose consequence an earlier one already had (the same class for the same
    message: a replayed DSN with a new Message-ID or date, a DSN after our own SMTP
    transaction saw the same refusal) is recorded as a repeat and acts on nobody.
    Callers that may run twice must pass a fingerprint. The caller owns the transaction.
    ``bounces``: when soft bounces add up to a suppression (``soft_bounce_limit``, ``_days``).
    """
    if unverified:
        assert delivery_id is None and edition_id is None and subscriber_id is None
    if delivery_id is not None and (edition_id is None or subscriber_id is None):
        delivery = session.get(Delivery, delivery_id)
        if delivery is not None:
            edition_id = edition_id or delivery.edition_id
            subscriber_id = subscriber_id or delivery.subscriber_id
    acts = bounce_class in ACTING
    tied = any(x is not None for x in (delivery_id, edition_id, subscriber_id)) or \
        attribution in ("verp", "message-id", "smtp")
    if unverified:
        trust = Trust.unverified if acts else Trust.none
    else:
        trust = Trust.verified if tied else Trust.none
    bounce = Bounce(
        source=_text(source, 32), bounce_class=bounce_class,
        recipient=_text(recipient.strip(), 320), status_code=_text(status_code, 16),
        diagnostic=_text(diagnostic, 2000), remote_mta=_text(remote_mta, 255),
        delivery_id=delivery_id, edition_id=edition_id, subscriber_id=subscriber_id,
        attribution=_text(attribution, 16), attribution_note=_text(attribution_note, 1000),
        raw_excerpt=_text(raw_excerpt, EXCERPT_LIMIT), fingerprint=fingerprint,
        trust=trust, unverified_reason=_text(unverified, 32),
        claimed_delivery_id=claimed_delivery_id, claimed_subscriber_id=claimed_subscriber_id,
        act_key=_act_key(bounce_class, delivery_id, confirmation_token_id) if acts else None,
        evidence=_evidence(bounce_class, strength, status_code, diagnostic, recipient),
    )
    try:
        with session.begin_nested():
            session.add(bounce)
            session.flush()
    except IntegrityError:
        if _seen(session, fingerprint, bounce.recipient):
            return None
        return _record_repeat(session, bounce)
    bounce.action = _act(session, bounce, bounces)[:32]
    _tell_webhooks(session, bounce)
    return bounce


def _tell_webhooks(session: Session, bounce: Bounce) -> None:
    """``bounce.recorded`` / ``complaint.recorded`` for a bounce of a mail we sent (tied to
    a reader or an edition); unverified and unattributed ones tell nobody."""
    if bounce.bounce_class not in ACTING or bounce.trust == Trust.unverified or \
            (bounce.subscriber_id is None and bounce.edition_id is None):
        return
    subscriber = (session.get(Subscriber, bounce.subscriber_id)
                  if bounce.subscriber_id is not None else None)
    kind = COMPLAINT if bounce.bounce_class == BounceClass.complaint else BOUNCE
    data = {"bounce": {"id": bounce.id, "class": str(bounce.bounce_class),
                       "status_code": bounce.status_code, "source": bounce.source,
                       "action": bounce.action, "edition_id": bounce.edition_id},
            "subscriber": ({"id": subscriber.public_id, "email": subscriber.email}
                           if subscriber is not None else None)}
    emit(session, kind, data, subscriber_id=bounce.subscriber_id)


#: The classes that act on a reader or alert the operators.
ACTING = (BounceClass.hard, BounceClass.soft, BounceClass.complaint, BounceClass.policy)


def _act_key(klass: str, delivery_id: int | None, token_id: int | None,
             extra: str = "") -> str | None:
    """The consequence a bounce has: its class for one message we sent."""
    if delivery_id is not None:
        return f"{klass}:d{delivery_id}"
    if token_id is not None:
        return f"{klass}:c{token_id}"
    return f"{klass}:{extra}"[:80] if extra else None


def _seen(session: Session, fingerprint: str | None, recipient: str) -> bool:
    if fingerprint is None:
        return False
    return session.scalar(select(Bounce.id).where(
        Bounce.fingerprint == fingerprint, Bounce.recipient == recipient)) is not None


def _record_repeat(session: Session, bounce: Bounce) -> Bounce | None:
    """The bounce's consequence was had already: keep it as evidence, tied to nobody (so no
    count, rate or alert sees it twice), with who it named."""
    first = session.scalar(select(Bounce.id).where(Bounce.act_key == bounce.act_key))
    if bounce in session:
        session.expunge(bounce)
    repeat = Bounce(
        **{c: getattr(bounce, c) for c in _COPIED},
        claimed_delivery_id=bounce.claimed_delivery_id or bounce.delivery_id,
        claimed_subscriber_id=bounce.claimed_subscriber_id or bounce.subscriber_id,
        trust=bounce.trust, act_key=None,
        action=f"nothing: repeat of #{first}"[:32],
    )
    try:
        with session.begin_nested():
            session.add(repeat)
            session.flush()
    except IntegrityError:
        return None
    return repeat


_COPIED = ("source", "bounce_class", "recipient", "status_code", "diagnostic", "remote_mta",
           "attribution", "attribution_note", "raw_excerpt", "fingerprint",
           "unverified_reason", "evidence")


def _evidence(bounce_class: BounceClass, strength: str | None, status_code: str,
              diagnostic: str, recipient: str) -> str:
    if bounce_class != BounceClass.hard:
        return ""
    if strength in (STRONG, WEAK):
        return strength
    return hard_strength(status_code, diagnostic, recipient=recipient.strip())


def _text(value: str, limit: int) -> str:
    """Bounded, and without NUL characters (PostgreSQL refuses them in text; hostile and
    broken bounces carry them)."""
    return value[:limit].replace("\x00", "\ufffd")


def _act(session: Session, bounce: Bounce, bounces: BounceSettings) -> str:
    if bounce.bounce_class not in ACTING:
        return "nothing"
    if bounce.trust == Trust.unverified:
        # Anyone can mail the bounce server: only a bounce tied to a message we sent may
        # act. Kept for staff, who can confirm it (confirm_bounce).
        return "nothing: unverified"
    if bounce.subscriber_id is None and bounce.edition_id is None:
        # Backscatter of spam that forged our domain is full of "5.7.1 spam" rejections:
        # only a bounce of a message we really sent may act or alert.
        return "nothing: not attributed"
    if bounce.bounce_class == BounceClass.policy:
        # The sender's problem, not the reader's: alert the operators, suppress nobody.
        _raise_alert(session, "policy_rejections", bounce.edition_id)
        return "alerted: policy rejection"
    if bounce.subscriber_id is None:
        return "nothing: not attributed"
    subscriber = session.get(Subscriber, bounce.subscriber_id)
    if subscriber is None:
        return "nothing: subscriber erased"
    evidence = (f"bounce #{bounce.id} via {bounce.source}: "
                f"{bounce.status_code} {bounce.diagnostic}").strip()[:1000]
    if bounce.trust == Trust.confirmed:
        evidence = f"{evidence} (confirmed by {bounce.confirmed_by})"[:1000]
    if bounce.bounce_class == BounceClass.hard:
        if bounce.evidence == WEAK:
            earlier = confirms_weak_hard(session, bounce, bounces)
            if earlier is None:
                return "counted: weak hard, 1 of 2"
            evidence = f"{evidence}; repeats bounce #{earlier}"[:1000]
        done = suppress(session, subscriber.address_hash,
                        reason=SuppressionReason.hard_bounce, evidence=evidence)
        return "suppressed" if done else "already suppressed"
    if bounce.bounce_class == BounceClass.complaint:
        unsubscribe(session, subscriber, list_id=None, channel="complaint")  # every list
        suppress(session, subscriber.address_hash,
                 reason=SuppressionReason.complaint, evidence=evidence)
        _raise_alert(session, "complaints", bounce.edition_id)
        return "unsubscribed and suppressed"
    weak_hard = confirms_weak_hard(session, bounce, bounces)
    if weak_hard is not None:  # the repeat a weak hard bounce was waiting for
        done = suppress(
            session, subscriber.address_hash, reason=SuppressionReason.hard_bounce,
            evidence=f"weak hard bounce #{weak_hard} repeated by {evidence}"[:1000])
        return "suppressed" if done else "already suppressed"
    count = soft_bounce_count(session, subscriber.id, bounces)
    limit = bounces.soft_bounce_limit
    if count >= limit:
        done = suppress(
            session, subscriber.address_hash, reason=SuppressionReason.soft_bounces,
            evidence=f"{count} soft bounces on distinct editions; last: {evidence}")
        return "suppressed" if done else "already suppressed"
    return f"counted: {count} of {limit} soft"


# --- staff confirm an unverified bounce --------------------------------------------------------


class NotConfirmable(Exception):
    """The bounce does not exist, or is not an unverified one."""


def confirm_bounce(session: Session, bounce_id: int, *, by: str,
                   bounces: BounceSettings) -> Bounce:
    """A staff member vouches for an unverified bounce: it now acts exactly as a verified
    one would, on the reader it named, once (``bounces``: the soft-bounce rule). Confirming
    it again does nothing more (raises NotConfirmable). The caller owns the transaction;
    the audit entry (``bounce.confirm``, by ``by``) is written here, in it.
    """
    bounce = _confirm(session, bounce_id, by=by, bounces=bounces)
    record(session, actor=by, action="bounce.confirm", target=f"bounce:{bounce_id}",
           detail={"class": bounce.bounce_class, "recipient": bounce.recipient,
                   "reason": bounce.unverified_reason, "action": bounce.action,
                   "subscriber_id": bounce.subscriber_id})
    return bounce


def _confirm(session: Session, bounce_id: int, *, by: str, bounces: BounceSettings) -> Bounce:
    now = utcnow()
    # A conditional UPDATE: of two staff clicking at once, one confirms, the other is told.
    done = cast(CursorResult[Any], session.execute(
        update(Bounce).where(Bounce.id == bounce_id, Bounce.trust == Trust.unverified)
        .values(trust=Trust.confirmed, confirmed_by=by[:320], confirmed_at=now)
        .execution_options(synchronize_session=False)
    )).rowcount
    bounce = session.get(Bounce, bounce_id, populate_existing=True)
    if bounce is None:
        raise NotConfirmable(f"there is no bounce #{bounce_id}")
    if not done:
        raise NotConfirmable(f"bounce #{bounce_id} is {bounce.trust or 'not unverified'}: "
                             "nothing to confirm")
    delivery = session.get(Delivery, bounce.claimed_delivery_id) \
        if bounce.claimed_delivery_id is not None else None
    bounce.delivery_id = delivery.id if delivery else None
    bounce.edition_id = delivery.edition_id if delivery else None
    bounce.subscriber_id = bounce.claimed_subscriber_id or (
        delivery.subscriber_id if delivery else None)
    content = f"s{bounce.subscriber_id}:" + hashlib.sha256(
        f"{bounce.recipient}\x00{bounce.status_code}\x00{bounce.diagnostic}".encode()
    ).hexdigest()[:24]
    key = _act_key(bounce.bounce_class, bounce.delivery_id, None,
                   content if bounce.subscriber_id is not None else "")
    first = session.scalar(select(Bounce.id).where(Bounce.act_key == key)) if key else None
    if first is not None:
        # A verified (or confirmed) bounce had this consequence already: once is enough.
        # (Two confirmations racing for the same key: the unique act_key stops the second.)
        bounce.delivery_id = bounce.edition_id = bounce.subscriber_id = None
        bounce.action = f"nothing: repeat of #{first}"[:32]
        return bounce
    bounce.act_key = key
    session.flush()
    bounce.action = _act(session, bounce, bounces)[:32]
    return bounce


def confirms_weak_hard(session: Session, bounce: Bounce, bounces: BounceSettings) -> int | None:
    """The earlier bounce that makes this one the repeat a weak hard bounce waits for.

    A weak hard bounce suppresses only when a second hard or soft bounce of the same
    reader comes for another edition, within the soft-bounce window and with no good
    delivery between them. So: for a weak hard ``bounce``, an earlier hard or soft one; for
    a soft or hard one, an earlier weak hard one. Returns its id, or None.
    """
    if bounce.subscriber_id is None:
        return None
    earlier = [Bounce.bounce_class == BounceClass.hard, Bounce.evidence == WEAK]
    if bounce.bounce_class == BounceClass.hard and bounce.evidence == WEAK:
        earlier = [Bounce.bounce_class.in_((BounceClass.hard, BounceClass.soft))]
    this_send = func.coalesce(bounce.edition_id, -bounce.id)
    return session.scalar(
        select(Bounce.id).where(
            Bounce.subscriber_id == bounce.subscriber_id, Bounce.id != bounce.id,
            func.coalesce(Bounce.edition_id, -Bounce.id) != this_send,
            Bounce.received_at > _counting_since(session, bounce.subscriber_id, bounces),
            *earlier,
        ).order_by(Bounce.id).limit(1)
    )


def _counting_since(session: Session, subscriber_id: int,
                    bounces: BounceSettings) -> dt.datetime:
    """Where the bounces that count start: the window (``bounces.soft_bounce_days``), or the
    last good delivery if later.

    A good delivery is one the server accepted (state sent) that no soft, hard or policy
    bounce came back for.
    """
    since = utcnow() - dt.timedelta(days=bounces.soft_bounce_days)
    bounced = exists().where(
        Bounce.delivery_id == Delivery.id, Bounce.bounce_class.in_(NOT_DELIVERED)
    )
    last_good = session.scalar(
        select(func.max(Delivery.sent_at)).where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.state == DeliveryState.sent,
            ~bounced,
        )
    )
    return last_good if last_good is not None and last_good > since else since


def soft_bounce_count(session: Session, subscriber_id: int, bounces: BounceSettings) -> int:
    """Soft bounces on distinct editions within the window, since the last good delivery.

    A soft bounce tied to no edition (a confirmation mail, a provider event naming only
    the address) counts as a send of its own.
    """
    since = _counting_since(session, subscriber_id, bounces)
    return int(session.scalar(
        select(func.count(distinct(func.coalesce(Bounce.edition_id, -Bounce.id)))).where(
            Bounce.subscriber_id == subscriber_id,
            Bounce.bounce_class == BounceClass.soft,
            Bounce.received_at > since,
        )
    ) or 0)


# --- the operators' alert counters -----------------------------------------------------------


def _raise_alert(session: Session, name: str, edition_id: int | None) -> None:
    """Count an alert in Redis once the transaction has committed (a rollback counts nothing;
    a repeat never gets here, record_bounce stops it first)."""

    def bump() -> None:
        try:
            pipe = get_redis().pipeline()
            pipe.hincrby(ALERT_KEY, name, 1)
            if edition_id is not None:
                pipe.hincrby(f"{ALERT_KEY}:edition:{edition_id}", name, 1)
            pipe.execute()
        except redis.RedisError as exc:  # the database still holds every bounce
            log.warning("could not count the alert %s: %s", name, exc)

    log.warning("bounce alert: %s", name, extra={"edition_id": edition_id})
    publish_after_commit(session, bump)


def alert_counts(edition_id: int | None = None) -> dict[str, int]:
    """The alert counters (policy_rejections, complaints), overall or for one edition."""
    key = ALERT_KEY if edition_id is None else f"{ALERT_KEY}:edition:{edition_id}"
    raw: dict[bytes, bytes] = get_redis().hgetall(key)  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}
