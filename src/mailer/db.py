"""The database: engine, sessions, the declarative base, and tasks published after commit.

The caller (a web request, a task, a CLI command) owns the transaction: it opens a session
with :func:`transaction`, calls service functions, and the commit happens once at the end.
Celery tasks (:func:`mailer.tasks.publish`) and other callbacks queued with
:func:`publish_after_commit` go out only if that commit succeeds,
so a worker never sees an id whose row is not there yet (and a rollback sends nothing).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from mailer.config import get_settings

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_ENGINES: dict[str, Engine] = {}


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    if url not in _ENGINES:
        _ENGINES[url] = _create_engine(url)
    return _ENGINES[url]


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["pool_size"] = 5
        kwargs["max_overflow"] = 10
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is switched off so that BEGIN IMMEDIATE below
    # takes the write lock at the start: no "database is locked" half-way through a
    # transaction when a worker and the web app write at the same time.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@lru_cache(maxsize=8)
def _sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False, future=True)


def new_session(url: str | None = None) -> Session:
    return _sessionmaker(url or get_settings().database_url)()


@contextmanager
def transaction(url: str | None = None) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error, always close."""
    session = new_session(url)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def masked_url(url: str) -> str:
    """The database URL with its password replaced by ``***``, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL holds no password we could find either
        return "<MAILER_DATABASE_URL is not a database URL>"


def database_problem(url: str | None = None, timeout: float = 5.0) -> str | None:
    """None when the database answers, else one line saying what is wrong and what to do."""
    url = url or get_settings().database_url
    try:
        if make_url(url).get_backend_name() == "sqlite":
            engine, throwaway = get_engine(url), False
        else:  # a connect timeout of its own: a host that drops packets must not hang
            engine = create_engine(url, connect_args={"connect_timeout": int(timeout)},
                                   poolclass=NullPool)
            throwaway = True
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            if throwaway:
                engine.dispose()
    except Exception as exc:  # any driver or URL error means "not usable", said in one line
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        return (f"not reachable at {masked_url(url)} ({reason[:300]}). Start it, or point "
                "MAILER_DATABASE_URL at a running one.")
    return None


def dispose_engines() -> None:
    """Close pooled connections (after a fork, or between tests)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()
    _sessionmaker.cache_clear()


# --- tasks published after commit --------------------------------------------------------

_PENDING = "mailer.after_commit"


def publish_after_commit(session: Session, send: Callable[[], Any]) -> None:
    """Run ``send`` once ``session`` has committed (tasks: :func:`mailer.tasks.publish`)."""
    session.info.setdefault(_PENDING, []).append(send)


def take_after_commit(session: Session) -> list[Callable[[], Any]]:
    """The callbacks a session holds, for a caller that commits the connection itself."""
    return list(session.info.pop(_PENDING, []))


def run_after_commit(callbacks: list[Callable[[], Any]]) -> None:
    for send in callbacks:
        try:
            send()
        except Exception:  # the broker is down: the sweeper re-queues from the database
            logging.getLogger(__name__).exception("could not publish a task after commit")


@event.listens_for(Session, "after_commit")
def _run_pending(session: Session) -> None:
    # SQLAlchemy calls this when a savepoint (begin_nested) is released too: the tasks
    # must wait for the transaction itself, or a worker looks before the rows are there.
    if session.in_nested_transaction():
        return
    run_after_commit(take_after_commit(session))


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, _previous: Any) -> None:
    if not session.in_transaction():
        session.info.pop(_PENDING, None)


#: The advisory lock that keeps an audience freeze and the deletion of subscribers apart.
AUDIENCE_LOCK = 0x6D61696C6572  # "mailer"


def audience_lock(session: Session, *, exclusive: bool) -> None:
    """Until the transaction ends: the freeze takes it shared (freezes run side by side),
    deleting a subscriber takes it exclusive. The delivery rows' link to their subscriber
    has no per-row foreign-key check (a million of them cost most of a freeze), so this is
    what keeps a subscriber from being deleted between the freeze reading its id and
    committing the row that names it; after the commit, the deletion's trigger blanks the
    link. On SQLite one writer at a time does the same."""
    if session.get_bind().dialect.name == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        session.execute(text(f"SELECT {function}(:key)"), {"key": AUDIENCE_LOCK})
