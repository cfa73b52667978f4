"""Unsubscribe: the links every mail carries, and the change they make.

A reader's links (unsubscribe, and the preference page's) never expire and cannot be
forged without the secret key; each is signed for its own purpose, so one is worthless as
the other. A test copy's unsubscribe link names its edition instead of a reader. Like
every subscribers service, ``unsubscribe`` never commits.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.db import utcnow
from mailer.lists.models import Subscription, SubscriptionStatus
from mailer.lists.service import slugs_of
from mailer.subscribers.confirmation import drop_from_open_links, retire_open_links
from mailer.subscribers.models import ConsentEventKind, Subscriber
from mailer.subscribers.records import record_event, rowcount
from mailer.tokens import sign, verify
from mailer.webhooks.events import UNSUBSCRIBED, emit_for_subscriber

#: An unsubscribe link's signature, in base64 characters: 132 bits, short enough for a
#: List-Unsubscribe header.
UNSUBSCRIBE_SIGNATURE = 22


def unsubscribe_token(subscriber: Subscriber, *, keys: Sequence[bytes]) -> str:
    """Never expires; cannot be forged without the secret key (the first of ``keys``,
    ``Settings.all_secrets``)."""
    return _unsubscribe_token(subscriber.public_id, keys)


def _unsubscribe_token(public_id: str, keys: Sequence[bytes]) -> str:
    return f"{public_id}.{sign('unsubscribe', public_id, UNSUBSCRIBE_SIGNATURE, keys=keys)}"


def unsubscribe_url(subscriber: Subscriber, *, base_url: str, keys: Sequence[bytes]) -> str:
    return unsubscribe_url_for(subscriber.public_id, base_url=base_url, keys=keys)


def unsubscribe_url_for(public_id: str, edition_id: int | None = None, *, base_url: str,
                        keys: Sequence[bytes], list_id: int | None = None) -> str:
    """The reader's link under ``base_url`` (``Settings.base_url``), signed with ``keys``;
    in an edition's mail it names the edition too (``?edition=``), so that an unsubscribe
    ends the list the edition went to and is counted against it; a mail that is not an
    edition names its list (``?list=``). The link is personal already: naming the edition
    changes no byte that readers share. A link that names neither (one mailed before there
    were lists) ends the first list, the only one there was."""
    url = f"{base_url}/unsubscribe/{_unsubscribe_token(public_id, keys)}"
    if edition_id is not None:
        return f"{url}?edition={edition_id}"
    return url if list_id is None else f"{url}?list={list_id}"


def subscriber_for_unsubscribe(session: Session, token: str, *,
                               keys: Sequence[bytes]) -> Subscriber | None:
    return _reader_of(session, "unsubscribe", token, keys)


def preferences_url_for(public_id: str, *, base_url: str, keys: Sequence[bytes]) -> str:
    """The reader's preference page (``/preferences/<public id>.<HMAC>``): never expires,
    signed for its own purpose (an unsubscribe token opens no preference page)."""
    signature = sign("preferences", public_id, UNSUBSCRIBE_SIGNATURE, keys=keys)
    return f"{base_url}/preferences/{public_id}.{signature}"


def preferences_url(subscriber: Subscriber, *, base_url: str, keys: Sequence[bytes]) -> str:
    return preferences_url_for(subscriber.public_id, base_url=base_url, keys=keys)


def subscriber_for_preferences(session: Session, token: str, *,
                               keys: Sequence[bytes]) -> Subscriber | None:
    """The reader a preference-page token names; None for a forged, tampered or unknown one."""
    return _reader_of(session, "preferences", token, keys)


def _reader_of(session: Session, purpose: str, token: str,
               keys: Sequence[bytes]) -> Subscriber | None:
    public_id, _, signature = token.partition(".")
    if len(public_id) != 32 or len(signature) != UNSUBSCRIBE_SIGNATURE:
        return None
    if not verify(purpose, public_id, signature, keys=keys):
        return None
    return session.scalars(select(Subscriber).where(Subscriber.public_id == public_id)).first()


#: A test copy's unsubscribe link names the edition instead of a reader ("test-<id>"),
#: signed like a reader's, so that its page can say it came in a test copy. A reader's
#: public id is 32 hex digits: the two can never be taken for each other.
TEST_COPY_PREFIX = "test-"


def public_id_of_test_copy(edition_id: int) -> str:
    return f"{TEST_COPY_PREFIX}{edition_id}"


def edition_of_test_copy(token: str, *, keys: Sequence[bytes]) -> int | None:
    """The edition whose test copy carried this unsubscribe link, or None (not such a link,
    or not signed by us)."""
    public_id, _, signature = token.partition(".")
    number = public_id.removeprefix(TEST_COPY_PREFIX)
    if (not public_id.startswith(TEST_COPY_PREFIX) or not number.isascii()
            or not number.isdigit() or len(number) > 18
            or len(signature) != UNSUBSCRIBE_SIGNATURE):
        return None
    return int(number) if verify("unsubscribe", public_id, signature, keys=keys) else None


def unsubscribe(
    session: Session, subscriber: Subscriber, *, list_id: int | None, channel: str,
    ip: str | None = None, user_agent: str | None = None, by: str | None = None,
    edition_id: int | None = None,
) -> bool:
    """End the reader's subscription to ``list_id``, or to every list (None); False when
    there was nothing to change (repeats are idempotent). One consent event per list ended.

    ``by`` names who unsubscribes the reader on their behalf (``api:<token name>``): the
    change is then in the audit log too. A reader's own click needs no audit entry: the
    consent event is its record. ``edition_id`` is the edition whose link was used, checked
    by the caller against what the reader was sent."""
    now = utcnow()
    query = select(Subscription.id, Subscription.list_id).where(
        Subscription.subscriber_id == subscriber.id,
        Subscription.status != SubscriptionStatus.unsubscribed)
    if list_id is not None:
        query = query.where(Subscription.list_id == list_id)
    ended: list[int] = []
    for row_id, on_list in session.execute(query.order_by(Subscription.list_id)).all():
        # The conditional update is the lock: two clicks at once end the list once.
        if rowcount(session.execute(
                update(Subscription)
                .where(Subscription.id == row_id,
                       Subscription.status != SubscriptionStatus.unsubscribed)
                .values(status=SubscriptionStatus.unsubscribed, unsubscribed_at=now,
                        updated_at=now))):
            ended.append(on_list)
    if not ended:
        return False
    subscriber.updated_at = now
    # Links still in the inbox must not confirm a list the reader has left.
    if _still_pending(session, subscriber.id):
        drop_from_open_links(session, subscriber, ended, now)
    else:
        retire_open_links(session, subscriber, now)
    for on_list in ended:
        record_event(session, subscriber, ConsentEventKind.unsubscribed, at=now,
                     channel=channel, ip=ip, user_agent=(user_agent or "")[:500] or None,
                     edition_id=edition_id, list_id=on_list)
    emit_for_subscriber(session, UNSUBSCRIBED, subscriber, channel=channel,
                        lists=slugs_of(session, ended))
    if by is not None:
        record(session, actor=by, action="subscriber.unsubscribe",
               target=f"subscriber:{subscriber.id}",
               detail={"channel": channel, "lists": ended})
    return True


def _still_pending(session: Session, subscriber_id: int) -> bool:
    return session.scalar(select(Subscription.id).where(
        Subscription.subscriber_id == subscriber_id,
        Subscription.status == SubscriptionStatus.pending).limit(1)) is not None

