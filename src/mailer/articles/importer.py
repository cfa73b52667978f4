"""Storing a feed's items as articles: idempotent by guid, an update never a duplicate.

Fetching and parsing happen before (``feeds.load``), outside any transaction, so a slow
website never holds the database. Here every item is already checked; the caller's
transaction makes the import all or nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.articles.feeds import Feed, FeedItem
from mailer.articles.models import Article
from mailer.articles.sanitise import html_to_text
from mailer.staff.audit import record


@dataclass
class ImportReport:
    source: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        line = (f"{self.source}: {self.created} new, {self.updated} updated, "
                f"{self.unchanged} unchanged")
        return line + (f", {len(self.problems)} problem(s)" if self.problems else "")


def import_feed(session: Session, feed: Feed, *, by: str | None = None) -> ImportReport:
    """Create or update one article per item; an item whose content did not change is
    left alone (its ``updated_at`` too). With ``by`` (a staff member's address, or "cli")
    the import is written to the audit log, in the same transaction."""
    report = ImportReport(source=feed.source, problems=list(feed.problems))
    guids = [item.guid for item in feed.items]
    existing = {
        article.guid: article
        for article in session.scalars(select(Article).where(Article.guid.in_(guids)))
    } if guids else {}
    for item in feed.items:
        values = _columns(item, source=feed.source)
        article = existing.get(item.guid)
        if article is None:
            session.add(Article(**values))
            report.created += 1
        elif article.content_hash != values["content_hash"]:
            for name, value in values.items():
                setattr(article, name, value)
            report.updated += 1
        else:
            report.unchanged += 1
    session.flush()
    if by is not None:
        record(session, actor=by, action="articles.import", target=feed.source[:200],
               detail={"new": report.created, "updated": report.updated,
                       "unchanged": report.unchanged, "problems": len(report.problems)})
    return report


def _columns(item: FeedItem, *, source: str) -> dict[str, Any]:
    offset = item.published.utcoffset()
    values: dict[str, Any] = {
        "guid": item.guid,
        "link": item.link,
        "title": item.title,
        "published_at": item.published,
        "published_utc_offset": int(offset.total_seconds() // 60) if offset else 0,
        "categories": list(item.categories),
        "author": item.author,
        "summary_html": item.summary_html,
        "summary_text": html_to_text(item.summary_html),
        "image_url": item.image.url if item.image else None,
        "image_alt": item.image.alt if item.image else "",
        "image_width": item.image.width if item.image else None,
        "image_height": item.image.height if item.image else None,
    }
    # The source is not part of the hash: the same feed read from a file or its URL
    # is the same content.
    canonical = json.dumps({**values, "published_at": item.published.isoformat()},
                           sort_keys=True, ensure_ascii=False)
    values["content_hash"] = hashlib.sha256(canonical.encode()).hexdigest()
    values["source"] = source[:2000]
    return values
