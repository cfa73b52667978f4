"""What a reader does on their preference page, each change a consent event.

Anyone holding the page's link (it never expires, it is in every mail) may change the
name and leave the newsletter: that is what the unsubscribe link allows already. What
would hand the person's data to the holder, or destroy it, is only *asked for* here: a
confirmation link goes to the address, and only its click (a POST from the page it opens)
mails the data to that same address (never to the page) or erases the person.

A confirmation link is ``<public id>.<action>.<round>.<HMAC>``: the round is the second
it was asked for, so a link works for :data:`REQUEST_TTL` and a repeated click finds its
round done. Like the other services, nothing here commits: the caller owns the
transaction, and tasks are published after its commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import privacy, tasks
from mailer.config import SignupSettings
from mailer.db import utcnow
from mailer.lists import service as lists
from mailer.lists import topics
from mailer.lists.models import MailingList, Subscription, SubscriptionStatus
from mailer.lists.topics import TopicView
from mailer.ratelimit import hit
from mailer.subscribers.models import ConsentEvent, ConsentEventKind, Subscriber
from mailer.subscribers.profile import update_profile
from mailer.subscribers.records import record_event
from mailer.subscribers.signup import Origin as SignupOrigin
from mailer.subscribers.signup import Profile, sign_up
from mailer.subscribers.unsubscribe import UNSUBSCRIBE_SIGNATURE, unsubscribe
from mailer.tokens import sign, verify

#: The consent events' channel, and who the export's and erasure's audit rows name.
CHANNEL = "preferences"
BY_READER = "reader:preferences"
#: What the page changes without asking the inbox first.
NAME_FIELDS = ("first_name", "last_name")

Action = Literal["export", "erase"]
ACTIONS: tuple[Action, ...] = ("export", "erase")
#: How long a confirmation link works.
REQUEST_TTL = dt.timedelta(days=2)
_REQUESTED = {"export": ConsentEventKind.export_requested,
              "erase": ConsentEventKind.erasure_requested}


@dataclass(frozen=True)
class Origin:
    """Where a click came from, as the consent record keeps it."""

    ip: str | None = None
    user_agent: str | None = None

    def fields(self) -> dict[str, str | None]:
        return {"channel": CHANNEL, "ip": self.ip,
                "user_agent": (self.user_agent or "")[:500] or None}


def change_name(session: Session, subscriber: Subscriber, *, first_name: str, last_name: str,
                origin: Origin) -> list[str]:
    """Set the first and last name; the fields that changed. Raises
    :class:`~mailer.subscribers.profile.ProfileError` (nothing changed) for a value the
    sign-up form would refuse."""
    changed = update_profile(session, subscriber,
                             {"first_name": first_name, "last_name": last_name}, by=None)
    if changed:
        record_event(session, subscriber, ConsentEventKind.name_changed,
                     detail={"fields": changed}, **origin.fields())
    return changed


def leave(session: Session, subscriber: Subscriber, *, origin: Origin,
          list_id: int | None = None) -> bool:
    """Leave one list (``list_id``) or every list (None), as the unsubscribe link does;
    False for a repeat (nothing recorded)."""
    return unsubscribe(session, subscriber, list_id=list_id, channel=CHANNEL, ip=origin.ip,
                       user_agent=origin.user_agent)


# --- the reader's lists and topics ------------------------------------------------------------


class PreferenceError(ValueError):
    """A change the page cannot make, in the reader's words (the page answers a 4xx)."""


@dataclass(frozen=True)
class ListChoice:
    """A list as the reader's page shows it: their status on it (None: not on it, or
    left it), the topics it offers and those they follow."""

    mailing_list: MailingList
    status: str | None
    topics: list[TopicView]
    followed: frozenset[int]

    @property
    def on_it(self) -> bool:
        return self.status in (SubscriptionStatus.confirmed, SubscriptionStatus.pending)

    @property
    def follows_all(self) -> bool:
        return self.followed == {t.id for t in self.topics}


def lists_of(session: Session, subscriber: Subscriber, *,
             unfiled: Collection[str] = topics.UNFILED) -> list[ListChoice]:
    """The open lists the reader is on (or waits to be confirmed on), and the public ones
    they could join, in the lists' order. A private list they are not on is not shown."""
    held = {s.list_id: s for s in session.scalars(
        select(Subscription).where(Subscription.subscriber_id == subscriber.id))}
    choices = []
    for lst in lists.all_lists(session):
        subscription = held.get(lst.id)
        status = subscription.status if subscription is not None else None
        on_it = status in (SubscriptionStatus.confirmed, SubscriptionStatus.pending)
        if not (on_it or lst.public):
            continue
        offered: list[TopicView] = []
        followed: frozenset[int] = frozenset()
        if on_it and subscription is not None:
            topics.sync(session, lst.id, unfiled=unfiled)
            offered = topics.catalogue(session, lst.id)
            followed = frozenset(topics.followed(session, lst.id, subscription.topics))
        choices.append(ListChoice(lst, status if on_it else None, offered, followed))
    return choices


def change_topics(session: Session, subscriber: Subscriber, list_id: int,
                  topic_ids: Sequence[int], *, origin: Origin) -> bool:
    """Follow these topics of a list the reader is on (every one offered: all of them,
    the topics of tomorrow included); False when nothing changed. A ``topics_changed``
    consent event records the change. Raises PreferenceError."""
    subscription = lists.subscription(session, subscriber.id, list_id, lock=True)
    if subscription is None or subscription.status not in (
            SubscriptionStatus.confirmed, SubscriptionStatus.pending):
        raise PreferenceError("You are not on this list: join it first.")
    try:
        return topics.set_topics(session, subscription, list(topic_ids), origin,
                                 channel=CHANNEL)
    except topics.TopicError as exc:
        raise PreferenceError(f"{exc}.".capitalize()) from exc


class Limited(PreferenceError):
    """Too many sign-ups from this IP address this hour (the sign-up form's limit)."""


def join(session: Session, subscriber: Subscriber, list_id: int, *, origin: Origin,
         signup: SignupSettings) -> MailingList:
    """Sign the reader up to a public list: a pending subscription, and a confirmation
    link mailed to the address (double opt-in is per list), under the sign-up form's
    limits: over the IP address's, Limited (nothing done); over the address's daily one,
    no new link today (the rest as usual). Raises PreferenceError for a list that takes no
    sign-ups here, before any limit is counted."""
    lst = lists.find(session, list_id)
    if lst is None or not lst.public or lst.archived_at is not None:
        raise PreferenceError("This list takes no sign-ups here.")
    if not hit(f"signup-ip:{origin.ip}", signup.signup_limit_per_ip_per_hour, 3600):
        raise Limited("Too many sign-ups from here: please try again in an hour.")
    may_mail = hit(f"signup-address:{subscriber.address_hash}",
                   signup.confirmation_mails_per_address_per_day, 86400)
    profile = Profile(first_name=subscriber.first_name, last_name=subscriber.last_name,
                      organisation=subscriber.organisation, country=subscriber.country)
    sign_up(session, email=subscriber.email, profile=profile,
            origin=SignupOrigin(source=CHANNEL, ip=origin.ip, user_agent=origin.user_agent),
            signup=signup, lists=[lst], may_mail=may_mail)
    tasks.publish(tasks.SEND_CONFIRMATION, subscriber.id, session=session)
    return lst


def request(session: Session, subscriber: Subscriber, action: Action, *, origin: Origin,
            signup: SignupSettings) -> bool:
    """Ask for the confirmation mail of ``action``; False (nothing recorded, nothing sent)
    over the limits the sign-up's confirmation mails keep: per IP address an hour, and per
    address and action a day."""
    if not hit(f"preferences-ip:{origin.ip}", signup.signup_limit_per_ip_per_hour, 3600):
        return False
    if not hit(f"preferences-{action}:{subscriber.address_hash}",
               signup.confirmation_mails_per_address_per_day, 86400):
        return False
    round_ = int(utcnow().timestamp())
    record_event(session, subscriber, _REQUESTED[action], detail={"round": round_},
                 **origin.fields())
    tasks.publish(tasks.SEND_PREFERENCE_REQUEST, subscriber.id, action, round_,
                  session=session)
    return True


def confirmation_token(public_id: str, action: Action, round_: int, *,
                       keys: Sequence[bytes]) -> str:
    value = f"{public_id}.{action}.{round_}"
    return f"{value}.{sign('preferences-confirm', value, UNSUBSCRIBE_SIGNATURE, keys=keys)}"


def confirmation_url(subscriber: Subscriber, action: Action, round_: int, *,
                     base_url: str, keys: Sequence[bytes]) -> str:
    token = confirmation_token(subscriber.public_id, action, round_, keys=keys)
    return f"{base_url}/preferences/confirm/{token}"


@dataclass(frozen=True)
class Check:
    """What a confirmation link is: ``ok`` (with its reader, action and round),
    ``invalid`` (forged, altered, or its reader is gone) or ``expired``."""

    status: Literal["ok", "invalid", "expired"]
    subscriber: Subscriber | None = None
    action: Action | None = None
    round: int = 0


def check_confirmation(session: Session, token: str, *, keys: Sequence[bytes]) -> Check:
    value, _, signature = token.rpartition(".")
    public_id, action, round_text = (value.split(".") + ["", ""])[:3]
    if (len(signature) != UNSUBSCRIBE_SIGNATURE or action not in ACTIONS
            or not round_text.isascii() or not round_text.isdigit() or len(round_text) > 12
            or not verify("preferences-confirm", value, signature, keys=keys)):
        return Check("invalid")
    subscriber = session.scalars(
        select(Subscriber).where(Subscriber.public_id == public_id)).first()
    if subscriber is None:
        return Check("invalid")
    round_ = int(round_text)
    if dt.datetime.fromtimestamp(round_, dt.UTC) + REQUEST_TTL < utcnow():
        return Check("expired")
    return Check("ok", subscriber, action, round_)  # type: ignore[arg-type]


def confirm(session: Session, token: str, *, origin: Origin, keys: Sequence[bytes]) -> Check:
    """The confirmation link's button: the export is queued (once per round, however
    often the button is pressed), or the person erased (the hashed suppression stays)."""
    check = check_confirmation(session, token, keys=keys)
    if check.status != "ok":
        return check
    subscriber = check.subscriber
    assert subscriber is not None
    if check.action == "erase":
        privacy.erase(session, subscriber, by=BY_READER)
    elif check.round not in _rounds(session, subscriber, ConsentEventKind.export_confirmed):
        record_event(session, subscriber, ConsentEventKind.export_confirmed,
                     detail={"round": check.round}, **origin.fields())
        tasks.publish(tasks.SEND_DATA_EXPORT, subscriber.id, check.round, session=session)
    return check


def _rounds(session: Session, subscriber: Subscriber, kind: ConsentEventKind) -> set[int]:
    details = session.scalars(select(ConsentEvent.detail).where(
        ConsentEvent.subscriber_id == subscriber.id, ConsentEvent.kind == kind))
    return {d["round"] for d in details if d and "round" in d}
