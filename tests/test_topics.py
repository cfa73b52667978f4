"""A list's topics against the real databases: made from the articles' categories, renamed,
merged and hidden by staff, followed by readers (each change a consent event)."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from mailer.articles.models import Article
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists import topics
from mailer.lists.models import Subscription, SubscriptionStatus
from mailer.subscribers.models import ConsentEvent, Subscriber


@dataclass(frozen=True)
class Origin:
    ip: str | None
    user_agent: str | None


ORIGIN = Origin(ip="192.0.2.7", user_agent="test/1.0")


def _article(s, *categories: str) -> None:  # type: ignore[no-untyped-def]
    n = secrets.token_hex(6)
    s.add(Article(guid=f"g-{n}", link=f"https://example.org/{n}", title=n,
                  published_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                  categories=list(categories)))


def _list(s, slug: str = "news"):  # type: ignore[no-untyped-def]
    return lists.create(s, slug=slug, name=slug.title(), list_id=f"{slug}.example.org")


def _subscription(s, list_id: int, email: str = "reader@example.org") -> Subscription:  # type: ignore[no-untyped-def]
    sub = Subscriber(public_id=secrets.token_hex(8), email=email, email_key=email,
                     address_hash=secrets.token_hex(32))
    s.add(sub)
    s.flush()
    subscription = Subscription(subscriber_id=sub.id, list_id=list_id,
                                status=SubscriptionStatus.confirmed)
    s.add(subscription)
    s.flush()
    return subscription


@pytest.fixture
def news(clean) -> int:  # type: ignore[no-untyped-def]
    with transaction() as s:
        lst = _list(s)
        _article(s, "Mental Health", "Partners")
        _article(s, "Criminal Justice")
        _article(s, "Uncategorized")
        _article(s, "  ", "uncategorised", "Partners")
        _article(s)
        topics.sync(s, lst.id)
        return lst.id


def _labels(list_id: int) -> list[tuple[str, frozenset[str]]]:
    with transaction() as s:
        return [(v.label, v.categories) for v in topics.catalogue(s, list_id)]


def test_sync_makes_a_topic_of_every_category_but_the_unfiled_ones(news: int) -> None:
    assert _labels(news) == [("Criminal Justice", frozenset({"Criminal Justice"})),
                             ("Mental Health", frozenset({"Mental Health"})),
                             ("Partners", frozenset({"Partners"}))]


def test_sync_is_idempotent_and_adds_new_categories_at_the_end(news: int) -> None:
    with transaction() as s:
        topics.sync(s, news)
        _article(s, "Reading corner", "Partners")
        topics.sync(s, news)
        topics.sync(s, news)
    assert [label for label, _ in _labels(news)] == [
        "Criminal Justice", "Mental Health", "Partners", "Reading corner"]
    with transaction() as s:
        assert len(topics.all_topics(s, news)) == 4


def test_each_list_has_its_own_topics(news: int) -> None:
    with transaction() as s:
        other = _list(s, "events")
        topics.sync(s, other.id)
        topics.rename(s, topics.topic_named(s, other.id, "Partners"), "Our partners")
    assert "Partners" in [label for label, _ in _labels(news)]
    assert "Our partners" in [label for label, _ in _labels(other.id)]


def test_rename_merge_hide(news: int) -> None:
    with transaction() as s:
        mental = topics.topic_named(s, news, "Mental Health")
        partners = topics.topic_named(s, news, "partners")
        justice = topics.topic_named(s, news, "Criminal Justice")
        topics.rename(s, mental, "  Health   and care ")
        topics.merge(s, partners, mental)
        justice_id = justice.id
    assert _labels(news) == [
        ("Criminal Justice", frozenset({"Criminal Justice"})),
        ("Health and care", frozenset({"Mental Health", "Partners"}))]
    with transaction() as s:
        topics.hide(s, topics.topic_named(s, news, justice_id))
    assert _labels(news) == [("Health and care", frozenset({"Mental Health", "Partners"}))]
    with transaction() as s:
        topics.hide(s, topics.topic_named(s, news, str(justice_id)), hidden=False)
    assert len(_labels(news)) == 2


def test_a_merge_of_a_merged_topic_moves_what_was_merged_into_it(news: int) -> None:
    with transaction() as s:
        mental = topics.topic_named(s, news, "Mental Health")
        partners = topics.topic_named(s, news, "Partners")
        justice = topics.topic_named(s, news, "Criminal Justice")
        topics.merge(s, partners, mental)
        topics.merge(s, mental, justice)
        assert partners.merged_into == justice.id
    assert _labels(news) == [("Criminal Justice", frozenset(
        {"Criminal Justice", "Mental Health", "Partners"}))]


@pytest.mark.parametrize("what,says", [
    ("self", "itself"), ("into-merged-self", "itself"), ("hidden", "hidden"),
    ("label", "1 to 200"), ("unknown", "no topic"),
])
def test_staff_get_a_clear_refusal(news: int, what: str, says: str) -> None:
    with transaction() as s, pytest.raises(topics.TopicError, match=says):
        mental = topics.topic_named(s, news, "Mental Health")
        partners = topics.topic_named(s, news, "Partners")
        if what == "self":
            topics.merge(s, mental, mental)
        elif what == "into-merged-self":
            topics.merge(s, partners, mental)
            topics.merge(s, mental, partners)
        elif what == "hidden":
            topics.hide(s, partners)
            topics.merge(s, mental, partners)
        elif what == "label":
            topics.rename(s, mental, " " * 3)
        else:
            topics.topic_named(s, news, "Sports")


def test_categories_for_follows_merges_and_leaves_out_hidden_topics(news: int) -> None:
    with transaction() as s:
        mental = topics.topic_named(s, news, "Mental Health")
        partners = topics.topic_named(s, news, "Partners")
        justice = topics.topic_named(s, news, "Criminal Justice")
        assert topics.categories_for(s, news, None) is None
        assert topics.categories_for(s, news, [mental.id]) == {"Mental Health"}
        assert topics.categories_for(s, news, [999999]) == frozenset()
        topics.merge(s, mental, partners)
        # Who followed Mental Health follows the topic it is part of now.
        assert topics.categories_for(s, news, [mental.id]) == {"Mental Health", "Partners"}
        topics.hide(s, justice)
        assert topics.categories_for(s, news, [justice.id, mental.id]) == {
            "Mental Health", "Partners"}
        topics.hide(s, partners)
        assert topics.categories_for(s, news, [mental.id, partners.id]) == frozenset()


def _topic_events(subscriber_id: int) -> list[ConsentEvent]:
    with transaction() as s:
        return list(s.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == subscriber_id, ConsentEvent.kind == "topics_changed")
            .order_by(ConsentEvent.id)))


def test_set_topics_writes_a_consent_event_and_all_is_null(news: int) -> None:
    with transaction() as s:
        subscription = _subscription(s, news)
        sid, sub_id = subscription.id, subscription.subscriber_id
        ids = [v.id for v in topics.catalogue(s, news)]
        assert topics.set_topics(s, subscription, [ids[1]], ORIGIN) is True
        assert topics.set_topics(s, subscription, [ids[1]], ORIGIN) is False  # a repeat
    with transaction() as s:
        assert s.get(Subscription, sid).topics == [ids[1]]
    [event] = _topic_events(sub_id)
    assert (event.list_id, event.channel, event.ip) == (news, "preferences", "192.0.2.7")
    assert event.detail == {"before": None, "after": [ids[1]], "labels": ["Mental Health"]}
    assert event.address_hash
    with transaction() as s:
        subscription = s.get(Subscription, sid)
        # Every box ticked: everything, the topics of tomorrow included.
        assert topics.set_topics(s, subscription, list(reversed(ids)), ORIGIN) is True
        assert subscription.topics is None
        _article(s, "Human rights and ethics")
        topics.sync(s, news)
        assert topics.followed(s, news, subscription.topics) == {
            v.id for v in topics.catalogue(s, news)}
    assert [e.detail["after"] for e in _topic_events(sub_id)] == [[ids[1]], None]


@pytest.mark.parametrize("choice", [[], [999999], "hidden"])
def test_set_topics_refuses_what_the_list_does_not_offer(news: int, choice) -> None:  # type: ignore[no-untyped-def]
    with transaction() as s:
        subscription = _subscription(s, news)
        sub_id = subscription.subscriber_id
        if choice == "hidden":
            hidden = topics.topic_named(s, news, "Partners")
            topics.hide(s, hidden)
            choice = [hidden.id]
        with pytest.raises(topics.TopicError):
            topics.set_topics(s, subscription, choice, ORIGIN)
        assert subscription.topics is None
    assert _topic_events(sub_id) == []

