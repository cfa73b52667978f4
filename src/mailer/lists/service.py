"""Lists: create, edit, archive and find them; a list's identity and consent.

Like the subscribers services these take a session and never commit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.config import IdentitySettings, Settings, SignupSettings
from mailer.db import utcnow
from mailer.environment import check_from_address
from mailer.lists.models import MailingList, NoTopicsPolicy, Subscription, SubscriptionStatus

__all__ = ["ListError", "all_lists", "archive", "by_slug", "consent_for", "create",
           "default_list", "edit", "find", "identity_for", "public_lists", "subscription",
           "subscription_counts"]

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,59}$")
#: RFC 2919's list-id: dot-atom text, at least two labels (``news.example.org``).
LIST_ID = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+$")
#: What ``edit`` may change, and ``create`` may set besides the required three.
EDITABLE = ("name", "description", "list_id", "from_address", "reply_to", "consent_text",
            "consent_version", "public", "archive", "schedule_cron", "click_tracking",
            "no_topics", "position")


class ListError(ValueError):
    """Why a list cannot be made or changed so, in words staff understand."""


def default_list(session: Session) -> MailingList:
    """The first list (the one migration 0016 made of the single list of before): where a
    sign-up, an import or an edition goes that names no list."""
    found = session.scalars(
        select(MailingList).where(MailingList.archived_at.is_(None))
        .order_by(MailingList.position, MailingList.id).limit(1)).first()
    if found is None:
        raise ListError("there is no open list: create one with `mailer lists create`")
    return found


def first_list(session: Session) -> MailingList:
    """The oldest list (migration 0016's, the single list of before), archived or not."""
    found = session.scalars(select(MailingList).order_by(MailingList.id).limit(1)).first()
    if found is None:
        raise ListError("there is no list at all")
    return found


def find(session: Session, list_id: int) -> MailingList | None:
    return session.get(MailingList, list_id)


def by_slug(session: Session, slug: str) -> MailingList | None:
    return session.scalars(select(MailingList).where(MailingList.slug == slug)).first()


def all_lists(session: Session, *, archived: bool = False) -> list[MailingList]:
    query = select(MailingList).order_by(MailingList.position, MailingList.id)
    if not archived:
        query = query.where(MailingList.archived_at.is_(None))
    return list(session.scalars(query))


def public_lists(session: Session) -> list[MailingList]:
    """The lists a public form offers: public and not archived."""
    return [lst for lst in all_lists(session) if lst.public]


def create(session: Session, *, slug: str, name: str, list_id: str,
           **fields: Any) -> MailingList:
    slug = slug.strip().lower()
    if not SLUG.match(slug):
        raise ListError("the slug is lowercase letters, digits and dashes (at most 60), "
                        f"starting with a letter or digit; {slug!r} is not")
    if by_slug(session, slug) is not None:
        raise ListError(f"there is a list {slug!r} already")
    lst = MailingList(slug=slug, name="", list_id="", description="", public=True,
                      archive=True, no_topics=NoTopicsPolicy.skip,
                      position=_next_position(session))
    _apply(session, lst, {"name": name, "list_id": list_id, **fields})
    session.add(lst)
    session.flush()
    return lst


def edit(session: Session, lst: MailingList, **fields: Any) -> MailingList:
    _apply(session, lst, fields)
    session.flush()
    return lst


def archive(session: Session, lst: MailingList) -> None:
    """No sign-ups and no new editions from now on; the history stays."""
    if lst.archived_at is None:
        lst.archived_at = utcnow()
        session.flush()


def subscription(session: Session, subscriber_id: int, list_id: int, *,
                 lock: bool = False) -> Subscription | None:
    query = select(Subscription).where(Subscription.subscriber_id == subscriber_id,
                                       Subscription.list_id == list_id)
    return session.scalars(query.with_for_update() if lock else query).first()


def subscription_counts(session: Session) -> dict[int, dict[str, int]]:
    """Per list, how many subscriptions are in each status."""
    counts: dict[int, dict[str, int]] = {}
    rows = session.execute(select(Subscription.list_id, Subscription.status, func.count())
                           .group_by(Subscription.list_id, Subscription.status))
    for list_id, status, n in rows:
        counts.setdefault(list_id, {s.value: 0 for s in SubscriptionStatus})[status] = n
    return counts


def identity_for(lst: MailingList, identity: IdentitySettings) -> IdentitySettings:
    """The sender as this list's mail shows it: its name, List-Id, From and Reply-To where
    it has its own, the settings' otherwise."""
    changes: dict[str, Any] = {"list_name": lst.name, "list_id": lst.list_id}
    if lst.from_address:
        changes["from_address"] = lst.from_address
    if lst.reply_to:
        changes["reply_to"] = lst.reply_to
    return identity.model_copy(update=changes)


def settings_for(lst: MailingList, settings: Settings) -> Settings:
    """``settings`` as the list's mail is made with them: its sender (``identity_for``) and
    its click tracking where it sets its own."""
    editions = settings.editions
    if lst.click_tracking is not None and lst.click_tracking != editions.click_tracking:
        editions = editions.model_copy(update={"click_tracking": lst.click_tracking})
    return settings.model_copy(update={"identity": identity_for(lst, settings.identity),
                                       "editions": editions})


def consent_for(lst: MailingList, signup: SignupSettings) -> tuple[str, str]:
    """The consent a sign-up to this list gives: (version, text)."""
    return (lst.consent_version or signup.consent_version,
            lst.consent_text or signup.consent_text)


def names_of(lists: Sequence[MailingList]) -> str:
    """The lists' names as a sentence names them: "A", "A and B", "A, B and C"."""
    names = [lst.name for lst in lists]
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else ""


def _next_position(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.max(MailingList.position), -1))) or 0) + 1


def _apply(session: Session, lst: MailingList, fields: dict[str, Any]) -> None:
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise ListError(f"a list has no {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        if isinstance(value, str):
            value = value.strip()
        if name in ("from_address", "reply_to", "consent_text", "consent_version",
                    "schedule_cron") and value == "":
            value = None
        setattr(lst, name, _checked(session, lst, name, value))


def _checked(session: Session, lst: MailingList, name: str, value: Any) -> Any:
    if name == "name" and not (isinstance(value, str) and 0 < len(value) <= 200):
        raise ListError("a list needs a name of 1 to 200 characters")
    if name == "list_id":
        if not (isinstance(value, str) and len(value) <= 255 and LIST_ID.match(value)):
            raise ListError("the List-Id is a dotted name such as "
                            f"events.cep-probation.org (RFC 2919); {value!r} is not")
        other = session.scalars(select(MailingList).where(MailingList.list_id == value)).first()
        if other is not None and other is not lst:
            raise ListError(f"the list {other.slug!r} has that List-Id already")
    if name in ("from_address", "reply_to") and value is not None:
        try:
            value = check_from_address(value)
        except ValueError as exc:
            raise ListError(f"{name.replace('_', ' ')}: {exc}") from exc
    if name == "consent_version" and value is not None and len(value) > 32:
        raise ListError("a consent version is at most 32 characters")
    if name == "no_topics" and value not in {p.value for p in NoTopicsPolicy}:
        raise ListError("no_topics is 'skip' (the reader gets nothing) or 'whole' (the "
                        "whole edition)")
    if name == "schedule_cron" and value is not None and value.lower() != "off" \
            and len(value.split()) != 5:
        raise ListError("the rhythm is five crontab fields, or 'off'")
    if name == "description" and value is None:
        value = ""
    return value


def slugs_of(session: Session, list_ids: Sequence[int]) -> list[str]:
    """The slugs of these lists, in the order given (what webhooks and exports name)."""
    if not list_ids:
        return []
    slug = dict(session.execute(select(MailingList.id, MailingList.slug)
                                .where(MailingList.id.in_(list_ids))).all())
    return [slug[i] for i in list_ids if i in slug]


def lists_named(session: Session, slugs: Sequence[str]) -> list[MailingList]:
    """The open lists of these slugs, in the lists' order; an unknown one raises."""
    found = {lst.slug: lst for lst in all_lists(session)}
    missing = [s for s in slugs if s not in found]
    if missing:
        raise ListError(f"there is no open list {missing[0]!r}")
    wanted = set(slugs)
    return [lst for lst in found.values() if lst.slug in wanted]
