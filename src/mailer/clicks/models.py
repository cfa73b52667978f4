"""An edition's links, as frozen with its snapshot, and how often each was followed."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.db import Base, UTCDateTime


class EditionLink(Base):
    """One distinct link of an edition's mail, the ``position``-th in it (from 1).

    The counts hold no reader: the link a reader gets is the same for every reader of the
    edition. ``clicks`` are reads; ``head_requests`` and ``scanner_clicks`` are what mail
    security gateways and link previews fetch, kept apart so they are not shown as reads.
    """

    __tablename__ = "edition_link"

    # Named by table, not by class: this package stays below the editions one.
    edition_id: Mapped[int] = mapped_column(
        ForeignKey("edition.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    #: What the link says in the mail (an article's title, "Read more"), for the editors.
    label: Mapped[str] = mapped_column(String(300), default="")
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    head_requests: Mapped[int] = mapped_column(Integer, default=0)
    scanner_clicks: Mapped[int] = mapped_column(Integer, default=0)


class ClickFlush(Base):
    """A batch of counts moved from Redis to :class:`EditionLink`, by its id: a flush that
    runs again after a crash finds its batch here and does not count it twice."""

    __tablename__ = "click_flush"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    flushed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
