"""A list's topics: the article categories it publishes, as its readers see them.

Staff rename a category, merge it into another (their articles count as one topic) or hide
it (no reader is offered it, and it is in nobody's set). "Uncategorized" (the website's
default category) and empty names never become a topic. A subscription's ``topics`` holds
the ids of the topics its reader follows; NULL follows everything, the topics of tomorrow
included, and is what a reader who ticks every box gets.

This package sits below ``articles`` and ``subscribers`` (pyproject's layers): it reads the
articles' categories and writes the ``topics_changed`` consent event through their tables,
not their models. Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import JSON, Integer, String, column, func, insert, select, table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.db import UTCDateTime, utcnow
from mailer.lists.models import Subscription, Topic

__all__ = ["UNFILED", "TopicError", "TopicView", "all_topics", "catalogue", "categories_for",
           "followed", "hide", "merge", "rename", "set_topics", "sync", "topic_named",
           "unmerge"]

#: The website's default categories (``MAILER_UNFILED_CATEGORIES``' default): never a topic.
UNFILED = ("Uncategorized", "Uncategorised")
#: The longest category a topic row holds (``Topic.category``); a longer one is no topic.
CATEGORY_LIMIT = 200
LABEL_LIMIT = 200

_article = table("article", column("categories", JSON))
_subscriber = table("subscriber", column("id", Integer), column("address_hash", String))
_consent_event = table(
    "consent_event", column("subscriber_id", Integer), column("address_hash", String),
    column("kind", String), column("at", UTCDateTime), column("source", String),
    column("channel", String), column("ip", String), column("user_agent", String),
    column("detail", JSON), column("list_id", Integer))


class TopicError(ValueError):
    """Why a topic cannot be changed or followed so, in words staff and readers understand."""


@dataclass(frozen=True)
class TopicView:
    """A topic a reader may follow: its label, and the categories it stands for (its own
    plus those merged into it)."""

    id: int
    label: str
    categories: frozenset[str]


class Origin(Protocol):
    """Where a change came from (``subscribers.signup.Origin``, the preference page's)."""

    @property
    def ip(self) -> str | None: ...

    @property
    def user_agent(self) -> str | None: ...


def sync(session: Session, list_id: int, *, unfiled: Collection[str] = UNFILED) -> None:
    """A topic for every category the articles have that has none yet on this list, at the
    end of its order. Safe to run twice, and at the same time as another sync."""
    skip = {name.casefold() for name in unfiled}
    known = set(session.scalars(select(Topic.category).where(Topic.list_id == list_id)))
    seen: set[str] = set()
    for categories in session.scalars(select(_article.c.categories)):
        for name in categories or ():
            if isinstance(name, str):
                name = name.strip()
                if name and name.casefold() not in skip and len(name) <= CATEGORY_LIMIT:
                    seen.add(name)
    missing = sorted(seen - known, key=lambda n: (n.casefold(), n))
    if not missing:
        return
    position = int(session.scalar(select(func.coalesce(func.max(Topic.position), -1))
                                  .where(Topic.list_id == list_id)) or 0)
    for name in missing:
        position += 1
        try:
            # A concurrent sync may have added it: its row stands, this one is dropped.
            with session.begin_nested():
                session.add(Topic(list_id=list_id, category=name, label=name, hidden=False,
                                  position=position))
        except IntegrityError:
            pass
    session.flush()


def all_topics(session: Session, list_id: int) -> list[Topic]:
    """Every topic row of the list, hidden and merged ones too, in order (for staff)."""
    return list(session.scalars(select(Topic).where(Topic.list_id == list_id)
                                .order_by(Topic.position, Topic.id)))


def _categories_by_topic(rows: list[Topic]) -> dict[int, set[str]]:
    """Each visible topic's categories: its own and those merged into it (hidden ones, and
    those merged into a hidden one, stand for nobody)."""
    by_id = {t.id: t for t in rows}
    categories: dict[int, set[str]] = {}
    for topic in rows:
        root = _root(topic, by_id)
        if root is not None and not root.hidden:
            categories.setdefault(root.id, set()).add(topic.category)
    return categories


def catalogue(session: Session, list_id: int) -> list[TopicView]:
    """The topics a reader of this list may follow: not hidden, not merged, in order."""
    rows = all_topics(session, list_id)
    categories = _categories_by_topic(rows)
    return [TopicView(t.id, t.label, frozenset(categories.get(t.id, ())))
            for t in rows if t.merged_into is None and not t.hidden]


def followed(session: Session, list_id: int, topic_ids: Sequence[int] | None) -> set[int]:
    """The catalogue's topic ids a subscription's ``topics`` comes to: a topic since merged
    into another is that other one; a hidden or unknown one is none. (None: all.)"""
    views = catalogue(session, list_id)
    if topic_ids is None:
        return {v.id for v in views}
    by_id = {t.id: t for t in all_topics(session, list_id)}
    visible = {v.id for v in views}
    roots = (_root(by_id[i], by_id) for i in topic_ids if i in by_id)
    return {r.id for r in roots if r is not None and r.id in visible}


def categories_for(session: Session, list_id: int,
                   topic_ids: Sequence[int] | None) -> frozenset[str] | None:
    """The article categories a reader following ``topic_ids`` gets; None (follows
    everything) for None. Hidden topics' categories are in nobody's set."""
    if topic_ids is None:
        return None
    wanted = followed(session, list_id, topic_ids)
    return frozenset().union(*(v.categories for v in catalogue(session, list_id)
                               if v.id in wanted))


def topic_named(session: Session, list_id: int, ref: str | int) -> Topic:
    """A topic of the list by its id or its category (as the feed names it) or its label."""
    rows = all_topics(session, list_id)
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        wanted = int(ref)
        found = [t for t in rows if t.id == wanted]
    else:
        name = ref.strip()
        found = ([t for t in rows if t.category == name]
                 or [t for t in rows if t.label == name]
                 or [t for t in rows if t.category.casefold() == name.casefold()]
                 or [t for t in rows if t.label.casefold() == name.casefold()])
    if len(found) != 1:
        raise TopicError(f"this list has no topic {ref!r}" if not found else
                         f"more than one topic is called {ref!r}: name it by its id")
    return found[0]


def rename(session: Session, topic: Topic, label: str, *, by: str | None = None) -> Topic:
    """Show the category under another name (the feed's name stays its category). ``by``
    (staff, ``cli:<user>``) puts the change in the audit log."""
    label = " ".join((label or "").split())
    if not 0 < len(label) <= LABEL_LIMIT:
        raise TopicError(f"a topic's name is 1 to {LABEL_LIMIT} characters")
    before, topic.label = topic.label, label
    session.flush()
    if by is not None and before != label:
        _audit(session, by, "topic.rename", topic, {"before": before, "after": label})
    return topic


def merge(session: Session, topic: Topic, into: Topic, *, by: str | None = None) -> Topic:
    """Count ``topic``'s articles as ``into``'s; the topics merged into ``topic`` follow it.
    Readers who followed ``topic`` follow ``into`` (``followed``)."""
    if topic.list_id != into.list_id:
        raise TopicError("a topic merges only into a topic of the same list")
    by_id = {t.id: t for t in all_topics(session, topic.list_id)}
    target = _root(into, by_id)
    if target is None or target.id == topic.id:
        raise TopicError("a topic cannot be merged into itself")
    if target.hidden:
        raise TopicError(f"{target.label!r} is hidden: show it before merging into it")
    for other in by_id.values():
        if other.merged_into == topic.id:
            other.merged_into = target.id
    topic.merged_into = target.id
    session.flush()
    if by is not None:
        _audit(session, by, "topic.merge", topic, {"into": target.id, "label": target.label})
    return target


def unmerge(session: Session, topic: Topic, *, by: str | None = None) -> Topic:
    """A merged topic becomes a topic of its own again."""
    if topic.merged_into is not None:
        topic.merged_into = None
        session.flush()
        if by is not None:
            _audit(session, by, "topic.unmerge", topic, {})
    return topic


def hide(session: Session, topic: Topic, hidden: bool = True, *,
         by: str | None = None) -> Topic:
    """Offer the topic to nobody (``hidden=False`` offers it again). Its categories, and
    those merged into it, are in nobody's set while it is hidden."""
    if topic.hidden != hidden:
        topic.hidden = hidden
        session.flush()
        if by is not None:
            _audit(session, by, "topic.hide" if hidden else "topic.show", topic, {})
    return topic


def _audit(session: Session, by: str, action: str, topic: Topic,
           detail: dict[str, Any]) -> None:
    record(session, actor=by, action=action, target=f"topic:{topic.id}",
           detail={"list": topic.list_id, "category": topic.category, **detail})


def set_topics(session: Session, subscription: Subscription, topic_ids: Sequence[int] | None,
               origin: Origin, *, channel: str = "preferences") -> bool:
    """Follow these topics of the subscription's list (None, or every topic of the
    catalogue: everything, the topics of tomorrow included). Writes a ``topics_changed``
    consent event with the list and before/after; False (nothing written) when nothing
    changes. Raises TopicError for a topic the list does not offer, or for none at all."""
    views = catalogue(session, subscription.list_id)
    offered = {v.id for v in views}
    after: list[int] | None
    if topic_ids is None:
        after = None
    else:
        wanted = set(topic_ids)
        unknown = wanted - offered
        if unknown:
            raise TopicError("this list offers no such topic")
        if not wanted:
            raise TopicError("choose at least one topic, or leave the list")
        after = None if wanted == offered else [v.id for v in views if v.id in wanted]
    before = subscription.topics
    if _same(before, after):
        return False
    subscription.topics = after
    session.flush()
    labels = {v.id: v.label for v in views}
    detail: dict[str, Any] = {
        "before": before, "after": after,
        "labels": None if after is None else [labels[i] for i in after]}
    address_hash = session.scalar(select(_subscriber.c.address_hash)
                                  .where(_subscriber.c.id == subscription.subscriber_id))
    session.execute(insert(_consent_event).values(
        subscriber_id=subscription.subscriber_id, address_hash=address_hash,
        kind="topics_changed", at=utcnow(), source=None, channel=channel[:32],
        ip=(origin.ip or "")[:64] or None, user_agent=(origin.user_agent or "")[:500] or None,
        detail=detail, list_id=subscription.list_id))
    return True


def _same(before: Iterable[int] | None, after: list[int] | None) -> bool:
    if before is None or after is None:
        return before is None and after is None
    return set(before) == set(after)


def _root(topic: Topic, by_id: dict[int, Topic]) -> Topic | None:
    """The topic a merge chain ends at (``merge`` keeps chains one step long; a chain
    written otherwise, or a loop, is followed safely). A hidden topic in the chain hides."""
    seen: set[int] = set()
    current = topic
    while True:
        if current.hidden:
            return current
        if current.merged_into is None or current.merged_into not in by_id:
            return current
        if current.id in seen:
            return None
        seen.add(current.id)
        current = by_id[current.merged_into]


def categories_for_each(session: Session, list_id: int,
                        topic_sets: Sequence[Sequence[int] | None]
                        ) -> list[frozenset[str] | None]:
    """:func:`categories_for` of each of ``topic_sets``, the list's topics read once: an
    edition's freeze asks it for every distinct topic set of its audience (up to 255 for 8
    topics), and three queries each were most of the freeze's time."""
    rows = all_topics(session, list_id)
    by_id = {t.id: t for t in rows}
    categories = _categories_by_topic(rows)
    visible = {t.id for t in rows if t.merged_into is None and not t.hidden}
    answers: list[frozenset[str] | None] = []
    for topic_ids in topic_sets:
        if topic_ids is None:
            answers.append(None)
            continue
        roots = (_root(by_id[i], by_id) for i in topic_ids if i in by_id)
        wanted = {r.id for r in roots if r is not None and r.id in visible}
        answers.append(frozenset().union(*(categories.get(i, ()) for i in sorted(wanted))))
    return answers
