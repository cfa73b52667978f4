"""Sign-up: a reader's request to subscribe, and the checks of the form's name fields.

A sign-up records who asked (a consent event) and leaves a confirmation link for the
confirmations worker to mail (``mailer.subscribers.confirmation``); nothing is subscribed
until the reader confirms. Like every subscribers service it never commits.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.config import SignupSettings
from mailer.db import utcnow
from mailer.lists.models import MailingList, Subscription, SubscriptionStatus
from mailer.lists.service import consent_for, subscription
from mailer.subscribers.addresses import MAX_LENGTH as MAX_ADDRESS_LENGTH
from mailer.subscribers.addresses import normalise
from mailer.subscribers.confirmation import drop_from_open_links, link_mailed_today, new_token
from mailer.subscribers.models import ConsentEventKind, Subscriber
from mailer.subscribers.records import record_event
from mailer.tokens import address_hash, random_id
from mailer.webhooks.events import SUBSCRIBED, emit_for_subscriber, endpoints_wanting


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
            signup: SignupSettings, lists: Sequence[MailingList], may_mail: bool = True,
            by: str | None = None) -> Subscriber:
    """Record a sign-up to ``lists``. Each list the address is not confirmed on gets a
    pending subscription and is named in one confirmation link, whose mail the
    confirmations worker sends; a list it is confirmed on changes nothing. The consent is
    per list (its own text and version, ``lists.service.consent_for``).

    A link whose mail went out in the last day keeps working, and covers what it named: a
    second press of the form must not kill the link that is already in the reader's
    inbox, and the address gets no second mail today (a list it did not name waits for a
    link of its own, mailed once the day is over). With ``may_mail`` false (the address is
    over its daily limit) the link is made but its mail waits a day; everything else
    happens as usual.

    ``by`` names who signs the reader up on their behalf (``api:<token name>``): the
    sign-up then also goes into the audit log, in this transaction. The form's sign-up is
    the reader's own act; its consent event is its record. ``signup``: the consent given
    where a list has none of its own, the link's lifetime, whether the address's domain is
    asked about.

    Raises InvalidAddress, and ValueError for no list at all. The caller answers the same
    way whatever happened here.
    """
    if not lists:
        raise ValueError("a sign-up names at least one list")
    subscriber = _sign_up(session, email=email, profile=profile, origin=origin,
                          may_mail=may_mail, signup=signup, lists=lists)
    if by is not None:
        record(session, actor=by, action="subscriber.sign_up",
               target=f"subscriber:{subscriber.id}",
               detail={"source": origin.source, "lists": [lst.slug for lst in lists]})
    return subscriber


def _sign_up(session: Session, *, email: str, profile: Profile, origin: Origin,
             may_mail: bool, signup: SignupSettings,
             lists: Sequence[MailingList]) -> Subscriber:
    address, key = normalise(email, check_deliverability=signup.check_deliverability)
    given = {
        "source": origin.source[:100],
        "ip": (origin.ip or "")[:64] or None,
        "user_agent": (origin.user_agent or "")[:500] or None,
    }
    # Every kind of address goes through the same steps (find or create the row, write
    # an event per list, settle the link) so that the answer takes as long for a
    # subscribed address as for a new one: its timing must not tell who is subscribed.
    subscriber = _for_update(session, key)
    if subscriber is None:
        subscriber = _create_pending(session, address, key, profile, origin)
        if subscriber is None:  # a concurrent sign-up for the same address won the race
            subscriber = _for_update(session, key)
            assert subscriber is not None
    elif not _confirmed_anywhere(session, subscriber.id):
        # A stranger may type anybody's address: only a person nobody has confirmed yet
        # takes the names the form gives.
        _apply_profile(subscriber, profile)
        subscriber.email = address
    # Set by hand: the 14-day purge counts from the latest sign-up, even one that changed
    # no column (the ORM's onupdate fires only for a row that changed).
    subscriber.updated_at = utcnow()
    to_confirm: list[int] = []
    confirmed_already: list[int] = []
    for lst in lists:
        version, text = consent_for(lst, signup)
        consent = dict(given, consent_version=version, consent_text=text, list_id=lst.id)
        held = subscription(session, subscriber.id, lst.id, lock=True)
        if held is None:
            held = _new_subscription(session, subscriber.id, lst.id)
        if held.status == SubscriptionStatus.confirmed:
            # Nothing changes and no mail goes out; the submission is written down (who
            # tried), the same work as for the other kinds.
            record_event(session, subscriber, ConsentEventKind.already_subscribed, **consent)
            confirmed_already.append(lst.id)
            continue
        held.updated_at = utcnow()  # the purge of unconfirmed sign-ups counts from here
        if held.status == SubscriptionStatus.unsubscribed:
            held.status = SubscriptionStatus.pending
            record_event(session, subscriber, ConsentEventKind.resubscribed, **consent)
        else:
            record_event(session, subscriber, ConsentEventKind.subscribed, **consent)
        to_confirm.append(lst.id)
    link_mailed_today(session, subscriber)  # the same work whatever follows
    if to_confirm:
        # Over the address's daily limit the link is made all the same (a list asked for
        # must be confirmable), but its mail waits a day.
        new_token(session, subscriber, lists=to_confirm, signup=signup, hold=not may_mail)
        emit_for_subscriber(session, SUBSCRIBED, subscriber,
                            lists=[lst.slug for lst in lists if lst.id in to_confirm])
    else:
        # The same work, nothing emitted; an open link needs no longer name these lists.
        drop_from_open_links(session, subscriber, confirmed_already, utcnow())
        endpoints_wanting(session, SUBSCRIBED)
    session.flush()
    return subscriber


def _confirmed_anywhere(session: Session, subscriber_id: int) -> bool:
    return session.scalar(select(Subscription.id).where(
        Subscription.subscriber_id == subscriber_id,
        Subscription.status == SubscriptionStatus.confirmed).limit(1)) is not None


def _new_subscription(session: Session, subscriber_id: int, list_id: int) -> Subscription:
    """A pending subscription; a concurrent sign-up's row if that one was first."""
    held = Subscription(subscriber_id=subscriber_id, list_id=list_id,
                        status=SubscriptionStatus.pending)
    try:
        with session.begin_nested():
            session.add(held)
            session.flush()
    except IntegrityError:
        found = subscription(session, subscriber_id, list_id, lock=True)
        assert found is not None
        return found
    return held


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

