"""Editions of the digest: their articles, their frozen snapshot and their state."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailer.articles.models import Article
from mailer.db import Base, UTCDateTime, utcnow


class EditionState(enum.StrEnum):
    draft = "draft"
    scheduled = "scheduled"
    sending = "sending"
    paused = "paused"
    sent = "sent"
    cancelled = "cancelled"


class Edition(Base):
    __tablename__ = "edition"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    #: The list it goes to (no foreign key: migration 0016; a list is never deleted). An
    #: edition written without one goes to the first list, the one migration 0016 made.
    list_id: Mapped[int] = mapped_column(Integer, index=True, server_default=text("1"))
    subject: Mapped[str] = mapped_column(String(300))
    preheader: Mapped[str] = mapped_column(String(300), default="")
    intro: Mapped[str] = mapped_column(Text, default="")
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    category_order: Mapped[list[str]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16), default=EditionState.draft, index=True)
    state_reason: Mapped[str] = mapped_column(Text, default="")
    scheduled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    #: The inlined HTML and the text part with per-recipient placeholders, frozen when the
    #: send starts: every recipient and every retry gets these bytes.
    html_snapshot: Mapped[str | None] = mapped_column(Text)
    text_snapshot: Mapped[str | None] = mapped_column(Text)
    subject_snapshot: Mapped[str | None] = mapped_column(String(300))
    #: What the snapshot's placeholders end in (random per composition, never shown):
    #: feed text that looks like a placeholder is not one. NULL for snapshots frozen
    #: before keys were drawn.
    placeholder_key: Mapped[str | None] = mapped_column(String(32))
    #: The archive copy (no personal links), shown at /archive/<slug>.
    archive_html: Mapped[str | None] = mapped_column(Text)
    audience_count: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    articles: Mapped[list[EditionArticle]] = relationship(
        order_by="EditionArticle.position", cascade="all, delete-orphan", back_populates="edition"
    )


class EditionArticle(Base):
    __tablename__ = "edition_article"

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("edition.id", ondelete="CASCADE"))
    article_id: Mapped[int] = mapped_column(ForeignKey("article.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)

    edition: Mapped[Edition] = relationship(back_populates="articles")
    article: Mapped[Article] = relationship()

    __table_args__ = (UniqueConstraint("edition_id", "article_id"),)


class EditionVariant(Base):
    """The edition as the readers of some topics get it: only the articles of those topics,
    composed once at the freeze and personalised by bytes as the whole edition is.

    The whole edition (readers who follow everything, or whose topics select every
    article) is no variant: it is the edition's own snapshot, ``delivery.variant`` NULL.
    Two topic sets that select the same articles share one variant."""

    __tablename__ = "edition_variant"

    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("edition.id", ondelete="CASCADE"))
    #: 1, 2, … within the edition: what ``delivery.variant`` names.
    number: Mapped[int] = mapped_column(Integer)
    #: The edition's articles it holds, in the edition's order.
    article_ids: Mapped[list[int]] = mapped_column(JSON)
    subject_snapshot: Mapped[str] = mapped_column(String(300))
    html_snapshot: Mapped[str] = mapped_column(Text)
    text_snapshot: Mapped[str] = mapped_column(Text)
    placeholder_key: Mapped[str] = mapped_column(String(32))
    #: The readers frozen with it (the preview's figure).
    readers: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (UniqueConstraint("edition_id", "number"),)
