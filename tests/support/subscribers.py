"""Helpers for the subscription tests: readers in a given state, their events, their mail."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from mailer.config import get_settings
from mailer.db import transaction, utcnow
from mailer.lists.models import Subscription
from mailer.lists.service import first_list
from mailer.redis import get_redis
from mailer.subscribers.addresses import normalise
from mailer.subscribers.confirmation import confirm, confirmation_token_value
from mailer.subscribers.models import ConfirmationToken, ConsentEvent, Subscriber
from mailer.subscribers.queries import status_on
from mailer.subscribers.signup import Origin, Profile, sign_up
from mailer.subscribers.unsubscribe import unsubscribe
from tests.conftest import wait_for
from tests.support.factories import FIRST_LIST
from tests.support.mail import links, parse, parts
from tests.support.smtp_server import RecordingSMTPServer

ORIGIN = Origin(source="test", ip="192.0.2.1", user_agent="test/1.0")


def subscriber(email: str) -> Subscriber | None:
    key = normalise(email)[1]
    with transaction() as s:
        return s.scalars(select(Subscriber).where(Subscriber.email_key == key)).first()


def list_status(email: str, list_id: int = FIRST_LIST) -> str | None:
    """The reader's status on the list (the first one unless named); None: not on it, or
    no such reader."""
    key = normalise(email)[1]
    with transaction() as s:
        found = s.scalar(select(Subscriber.id).where(Subscriber.email_key == key))
        return None if found is None else status_on(s, found, list_id)


def events(subscriber_id: int) -> list[str]:
    with transaction() as s:
        return list(s.scalars(select(ConsentEvent.kind).where(
            ConsentEvent.subscriber_id == subscriber_id).order_by(ConsentEvent.id)))


def event_rows(subscriber_id: int) -> list[dict[str, object]]:
    """Every column of every event, to show that the record is only ever appended to."""
    with transaction() as s:
        rows = s.scalars(select(ConsentEvent).where(
            ConsentEvent.subscriber_id == subscriber_id).order_by(ConsentEvent.id)).all()
        return [{c.name: getattr(e, c.name) for c in ConsentEvent.__table__.columns}
                for e in rows]


def make(email: str, status: str, *, first_name: str = "") -> Subscriber:
    """A reader in ``status`` (pending, confirmed, unsubscribed), made through the service
    the way such a reader comes about. No task is queued: nothing is mailed."""
    with transaction() as s:
        sub = sign_up(s, email=email, profile=Profile(first_name=first_name),
                      origin=ORIGIN, signup=get_settings().signup, lists=[first_list(s)])
        if status in ("confirmed", "unsubscribed"):
            token = s.scalars(select(ConfirmationToken).where(
                ConfirmationToken.subscriber_id == sub.id)).one()
            keys = get_settings().all_secrets
            check = confirm(s, confirmation_token_value(token, keys=keys), ip="192.0.2.1",
                            user_agent="test/1.0", signup=get_settings().signup, keys=keys)
            assert check.status == "ok"
        if status == "unsubscribed":
            unsubscribe(s, sub, list_id=FIRST_LIST, channel="link")
        s.flush()
        s.refresh(sub)
        return sub


def confirmation_link(smtp: RecordingSMTPServer, address: str, count: int = 1) -> str:
    """Wait for the ``count``-th confirmation mail to ``address``; its confirm link."""
    mails = wait_for(lambda: (m := smtp.to(address)) and len(m) >= count and m,
                     what=f"confirmation mail #{count} to {address}")
    text, _ = parts(parse(mails[count - 1]))
    [link] = [u for u in links(text) if "/confirm/" in u]
    return link


def path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def move_back(subscriber_id: int, delta: dt.timedelta) -> None:
    """Make everything about a reader ``delta`` older: time passes, nobody sleeps."""
    with transaction() as s:
        sub = s.get(Subscriber, subscriber_id)
        assert sub is not None
        sub_values = {"created_at": sub.created_at - delta, "updated_at": sub.updated_at - delta}
        s.execute(update(Subscriber).where(Subscriber.id == subscriber_id).values(**sub_values))
        for held in s.scalars(select(Subscription).where(
                Subscription.subscriber_id == subscriber_id)):
            for column in ("created_at", "updated_at", "confirmed_at", "unsubscribed_at"):
                value = getattr(held, column)
                if value is not None:
                    setattr(held, column, value - delta)
        for token in s.scalars(select(ConfirmationToken).where(
                ConfirmationToken.subscriber_id == subscriber_id)):
            for column in ("created_at", "expires_at", "used_at", "sent_at", "claimed_until"):
                value = getattr(token, column)
                if value is not None:
                    setattr(token, column, value - delta)


def tokens(subscriber_id: int) -> list[ConfirmationToken]:
    with transaction() as s:
        return list(s.scalars(select(ConfirmationToken).where(
            ConfirmationToken.subscriber_id == subscriber_id).order_by(ConfirmationToken.id)))


def now() -> dt.datetime:
    return utcnow()


class TaskLog:
    """The worker's log from a mark on: the confirmation tasks it received and finished
    (``task``: another task of the confirmations queue, or a pattern matching several).

    Only tasks received after the mark count, so a task left over from before (a retry,
    a message queued by an earlier test) does not muddle the figures.
    """

    def __init__(self, worker: object, task: str = "send_confirmation") -> None:
        name = rf"Task workers\.confirmations\.{task}\[([^\]]+)\]"
        self._RECEIVED = re.compile(rf"{name} received")
        self._DONE = re.compile(rf"{name} succeeded in [0-9.e-]+s: '(\w+)'")
        self._ENDED = re.compile(rf"{name} (?:succeeded|raised|retry)")
        self.worker = worker
        self.offset = len(worker.output())  # type: ignore[attr-defined]

    def since(self) -> str:
        return self.worker.output()[self.offset:]  # type: ignore[attr-defined]

    def received(self) -> int:
        return len(self._RECEIVED.findall(self.since()))

    def outcomes(self) -> list[str]:
        log = self.since()
        ours = set(self._RECEIVED.findall(log))
        return [outcome for task_id, outcome in self._DONE.findall(log) if task_id in ours]

    def all_finished(self) -> bool:
        log = self.since()
        return set(self._RECEIVED.findall(log)) <= set(self._ENDED.findall(log))

    def wait_outcomes(self, n: int) -> list[str]:
        return wait_for(lambda: len(o := self.outcomes()) >= n and o,
                        what=f"{n} confirmation tasks to finish")


@pytest.fixture(autouse=True)
def settle_confirmation_tasks(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test, let the worker finish the confirmation mails the test queued.

    Otherwise a mail still on its way when the next test empties the tables would land
    in that test's data (the row ids start again at 1), or make its TRUNCATE deadlock on
    PostgreSQL. Import this fixture into a test module to use it there.
    """
    if "clean" not in request.fixturenames:
        yield
        return
    # Every task of the queue: the preference page's mails name a subscriber id too.
    log = TaskLog(request.getfixturevalue("worker"), task=r"\w+")
    yield
    redis = get_redis()
    wait_for(lambda: redis.llen("confirmations") == 0 and log.all_finished(), timeout=60,
             what="the worker to finish this test's confirmation mails")
