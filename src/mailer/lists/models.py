"""Lists, subscriptions and a list's topics."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailer.db import Base, UTCDateTime, utcnow


class NoTopicsPolicy(enum.StrEnum):
    """What a reader gets whose topics have nothing in an edition."""

    skip = "skip"  # nothing: the delivery is skipped with that reason
    whole = "whole"  # the whole edition


class MailingList(Base):
    """One audience: the bi-monthly newsletter, event announcements, an expert group.

    ``from_address``, ``reply_to``, ``consent_text`` and ``consent_version`` left empty
    (NULL) mean the settings' values (``MAILER_FROM_ADDRESS``…): the list migrated from the
    single list of before keeps following them."""

    __tablename__ = "mailing_list"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    #: The id part of the List-Id header (RFC 2919): ``<name> <list_id>``.
    list_id: Mapped[str] = mapped_column(String(255), unique=True)
    from_address: Mapped[str | None] = mapped_column(String(400))
    reply_to: Mapped[str | None] = mapped_column(String(400))
    consent_text: Mapped[str | None] = mapped_column(Text)
    consent_version: Mapped[str | None] = mapped_column(String(32))
    #: Private lists are for staff and import only: no public form offers them.
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Its sent editions are shown in the web archive.
    archive: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Its rhythm, five crontab fields (``mailer.editions.rhythm``); NULL: the settings'
    #: ``MAILER_EDITION_SCHEDULE_CRON``; "off": never drafted by the schedule.
    schedule_cron: Mapped[str | None] = mapped_column(String(100))
    #: Links go through ``/r/`` (counted per article, never per reader): NULL follows
    #: ``MAILER_CLICK_TRACKING``.
    click_tracking: Mapped[bool | None] = mapped_column(Boolean)
    no_topics: Mapped[str] = mapped_column(String(16), default=NoTopicsPolicy.skip)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: An archived list takes no sign-ups and no new editions; its history stays.
    archived_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class SubscriptionStatus(enum.StrEnum):
    pending = "pending"  # signed up, not yet confirmed: never mailed a newsletter
    confirmed = "confirmed"  # double opt-in done (or imported with recorded consent)
    unsubscribed = "unsubscribed"


class Subscription(Base):
    """A person on one list: its own status, and the topics they follow on it."""

    __tablename__ = "subscription"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscriber.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_list.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=SubscriptionStatus.pending)
    #: The topic ids followed; NULL: all of them, new topics included.
    topics: Mapped[list[int] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow,
                                                    onupdate=utcnow)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("subscriber_id", "list_id"),
        # The freeze: a list's confirmed readers in subscriber order.
        Index("ix_subscription_list_status_subscriber", "list_id", "status", "subscriber_id"),
    )


class Topic(Base):
    """An article category as a list's readers see it: renamed, merged into another, or
    hidden by staff. A category with no row here is a topic of its own name."""

    __tablename__ = "topic"

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_list.id", ondelete="CASCADE"))
    #: The article category as the feed names it.
    category: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(200))
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Its articles count as that topic's (a merge); NULL: a topic of its own.
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("topic.id", ondelete="SET NULL"))
    position: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (UniqueConstraint("list_id", "category"),)
