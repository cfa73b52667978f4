"""Rows for tests, made fast: thousands of subscribers in one statement."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import insert, select

from mailer.articles.models import Article
from mailer.config import BounceSettings, IdentitySettings, get_settings
from mailer.db import transaction, utcnow
from mailer.editions.models import Edition
from mailer.lists.models import Subscription
from mailer.subscribers.models import Subscriber

#: The list migration 0016 makes (the single list of before): where the factories put readers.
FIRST_LIST = 1

IDENTITY = IdentitySettings()  # the association as the tests' stack has it
BOUNCES = BounceSettings()  # the soft-bounce rule as the tests' stack has it (the defaults)


def stack_keys() -> list[bytes]:
    """The secrets the session's stack signs with (its random ``MAILER_SECRET_KEY``): what a
    test hands to whatever signs or checks a token its web server or worker also sees."""
    return get_settings().all_secrets


def make_subscribers(n: int, *, domain: str = "example.net", prefix: str = "reader",
                     status: str = "confirmed", domains: int = 1,
                     list_id: int = FIRST_LIST) -> list[str]:
    """``n`` subscribers reader00001@example.net … on the list ``list_id`` in ``status``;
    returns their addresses in id order."""
    now = utcnow()
    rows = []
    addresses = []
    for i in range(n):
        d = domain if domains == 1 else f"d{i % domains}.{domain}"
        email = f"{prefix}{i:05d}@{d}"
        addresses.append(email)
        rows.append({
            "public_id": secrets.token_hex(16), "email": email, "email_key": email,
            "address_hash": hashlib.sha256(email.encode()).hexdigest(),
            "first_name": f"Reader{i}", "last_name": "", "organisation": "", "country": "",
            "source": "test", "created_at": now, "updated_at": now,
        })
    with transaction() as session:
        for start in range(0, n, 5000):
            session.execute(insert(Subscriber), rows[start:start + 5000])
        ids = [i for start in range(0, n, 5000) for i in session.scalars(
            select(Subscriber.id).where(Subscriber.email_key.in_(addresses[start:start + 5000])))]
        held = [{"subscriber_id": i, "list_id": list_id, "status": status, "created_at": now,
                 "updated_at": now, "confirmed_at": now if status == "confirmed" else None,
                 "unsubscribed_at": now if status == "unsubscribed" else None}
                for i in sorted(ids)]
        for start in range(0, len(held), 5000):
            session.execute(insert(Subscription), held[start:start + 5000])
    return addresses


def make_articles(n: int = 3) -> list[int]:
    categories = ["News", "CEP Events", "Criminal Justice", "Mental Health"]
    now = utcnow()
    batch = secrets.token_hex(3)
    with transaction() as session:
        ids = []
        for i in range(n):
            article = Article(
                guid=f"https://www.cep-probation.org/?p={40000 + i}&b={batch}",
                link=f"https://www.cep-probation.org/article-{i}/",
                title=f"Article number {i} about probation in Europe",
                published_at=now - dt.timedelta(days=i + 1),
                categories=[categories[i % len(categories)]],
                author="CEP",
                summary_html=f"<p>Summary of article {i}: probation practice across Europe.</p>",
                summary_text=f"Summary of article {i}: probation practice across Europe.",
            )
            session.add(article)
            session.flush()
            ids.append(article.id)
        return ids


def make_edition(subject: str = "CEP Newsletter – test edition", articles: int = 3,
                 list_id: int = FIRST_LIST) -> int:
    """A draft edition of the list ``list_id`` with ``articles`` articles, made through the
    editions service."""
    from mailer.editions import service
    from mailer.lists.models import MailingList

    make_articles(articles)
    with transaction() as session:
        # Not in the audit log: the tests' own editions are not a staff member's action.
        start = utcnow() - dt.timedelta(days=articles + 1)
        edition = service.draft_edition(session, identity=IDENTITY, subject=subject, by="test",
                                        audit=False, window_start=start,
                                        mailing_list=session.get(MailingList, list_id))
        return edition.id


def edition_state(edition_id: int) -> str:
    with transaction() as session:
        return session.scalar(select(Edition.state).where(Edition.id == edition_id))




def start(edition_id: int) -> int:
    """Start the send of an edition as staff would; returns the audience."""
    from mailer.delivery import service as sending

    with transaction() as session:
        return sending.start_send(session, edition_id, by="test", settings=get_settings())


def counts(edition_id: int) -> dict[str, int]:
    from mailer.delivery import service as sending

    with transaction() as session:
        return sending.state_counts(session, edition_id)


def wait_sent(edition_id: int, timeout: float = 120) -> None:
    from tests.conftest import wait_for

    wait_for(lambda: edition_state(edition_id) == "sent", timeout=timeout, interval=0.1,
             what=lambda: f"edition {edition_id} to be sent (now {counts(edition_id)})")
