"""Articles imported from the association's website feed."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.db import Base, UTCDateTime, utcnow


class Article(Base):
    __tablename__ = "article"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The feed item's guid (or its link when it has none): the idempotency key of imports.
    guid: Mapped[str] = mapped_column(String(500), unique=True)
    link: Mapped[str] = mapped_column(String(2000))
    title: Mapped[str] = mapped_column(String(500))
    published_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    #: The publication time's UTC offset in minutes, as the feed gave it.
    published_utc_offset: Mapped[int] = mapped_column(Integer, default=0)
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    author: Mapped[str] = mapped_column(String(200), default="")
    summary_html: Mapped[str] = mapped_column(Text, default="")
    summary_text: Mapped[str] = mapped_column(Text, default="")
    image_url: Mapped[str | None] = mapped_column(String(2000))
    image_alt: Mapped[str] = mapped_column(String(500), default="")
    #: The image's size in pixels when the feed says it; the digest shows only images
    #: whose size it knows (an <img> needs width and height to be drawn right).
    image_width: Mapped[int | None] = mapped_column(Integer)
    image_height: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(2000), default="")
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_article_published_id", "published_at", "id"),)

    @property
    def category(self) -> str:
        """The article's main category: the first the feed gave. (The digest files it under
        the first of its categories that the association uses, see
        ``mailer.editions.compose.section_of``.)"""
        return self.categories[0] if self.categories else "Uncategorized"
