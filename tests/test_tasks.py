"""Publishing a task by name (mailer.tasks): after the commit, never after a rollback, on the
queue its name says; a real Redis of the test's own, no worker draining it."""

from __future__ import annotations

import base64
import json

import pytest

from mailer import tasks
from mailer.db import transaction
from mailer.ops.queues import depth
from mailer.redis import get_redis


def _queued(queue: str) -> list[tuple[str, list[object]]]:
    out = []
    for raw in get_redis().lrange(queue, 0, -1):  # type: ignore[union-attr]
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], body[0]))
    return out


def test_a_task_goes_out_only_once_the_transaction_commits(rig) -> None:
    r = get_redis()
    with transaction() as session:
        tasks.publish(tasks.SEND_CONFIRMATION, 41, session=session)
        n = tasks.publish_many(tasks.SEND_BATCH, [(7, 1, 10), (7, 11, 20), (7, 21, 30)],
                               session=session)
        assert n == 3
        assert depth(r, tasks.CONFIRMATIONS) == 0 and depth(r, tasks.BULK) == 0
    assert _queued(tasks.CONFIRMATIONS) == [(tasks.SEND_CONFIRMATION, [41])]
    assert sorted(_queued(tasks.BULK)) == [(tasks.SEND_BATCH, [7, 1, 10]),
                                           (tasks.SEND_BATCH, [7, 11, 20]),
                                           (tasks.SEND_BATCH, [7, 21, 30])]

    with pytest.raises(RuntimeError), transaction() as session:
        tasks.publish(tasks.PROCESS_INBOUND, 5, session=session)
        tasks.publish_many(tasks.SEND_BATCH, [(8, 1, 1)], session=session)
        raise RuntimeError("rolled back")
    assert depth(r, tasks.DEFAULT) == 0 and depth(r, tasks.BULK) == 3

    tasks.publish(tasks.PROCESS_INBOUND, 6, session=None)  # now, outside any transaction
    assert _queued(tasks.DEFAULT) == [(tasks.PROCESS_INBOUND, [6])]


def test_tasks_wait_for_the_transaction_not_for_a_savepoint(clean) -> None:
    """A savepoint released after a publish (``begin_nested``, as many services use) is no
    commit: the task goes out once the transaction itself commits, and never if it rolls
    back."""
    from sqlalchemy import text

    from mailer.db import publish_after_commit, transaction

    sent: list[str] = []
    with transaction() as session:
        publish_after_commit(session, lambda: sent.append("first"))
        with session.begin_nested():
            session.execute(text("SELECT 1"))
        with session.begin_nested(), session.begin_nested():
            session.execute(text("SELECT 1"))
        assert sent == []
    assert sent == ["first"]
    try:
        with transaction() as session:
            publish_after_commit(session, lambda: sent.append("rolled back"))
            with session.begin_nested():
                session.execute(text("SELECT 1"))
            raise RuntimeError("the caller fails")
    except RuntimeError:
        pass
    assert sent == ["first"]
