"""The test stack: real databases (SQLite and PostgreSQL), a real Redis, a real SMTP server
on loopback, real Celery worker processes and a real web server.

Every test that asks for ``stack`` runs twice, once per database backend. The stack (a
migrated database, an SMTP server, the environment the child processes get) lives for the
whole session per backend; ``clean`` empties every table, the Redis database and the SMTP
server's mailbox before each test.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.support.processes import Beat, UserWorker, WebServer, Worker, free_port
from tests.support.smtp_server import RecordingSMTPServer

# Everything the tests run (this process and every child: the CLI, workers, the web app)
# sees the same plain terminal and English messages, whatever the developer's: output that
# Rich wraps, colours or translates would otherwise depend on the shell pytest started in.
for _name in ("FORCE_COLOR", "PY_COLORS", "TERMINAL_WIDTH", "LANGUAGE"):
    os.environ.pop(_name, None)
os.environ.update({"COLUMNS": "200", "LINES": "50", "NO_COLOR": "1", "TERM": "dumb",
                   "LC_ALL": "C.UTF-8"})

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
PG_ADMIN = os.environ.get("MAILER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("MAILER_TEST_REDIS", "redis://127.0.0.1:6379")
# Separate Redis databases per backend; MAILER_TEST_REDIS_DBS="a,b" lets two test runs on
# one machine (two developers, two checkouts) keep out of each other's way.
_DBS = os.environ.get("MAILER_TEST_REDIS_DBS", "14,15").split(",")
REDIS_DB = {"sqlite": int(_DBS[0]), "postgresql": int(_DBS[1])}


@dataclass
class Stack:
    backend: str
    database_url: str
    redis_url: str
    smtp: RecordingSMTPServer
    env: dict[str, str]
    tmp: Path
    web_port: int
    processes: list[object] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def worker(self, name: str = "w", **kwargs: object) -> Worker:
        w = Worker(self.env, self.tmp / f"{name}.log", name=name, **kwargs)  # type: ignore[arg-type]
        self.processes.append(w)
        return w

    def beat(self, env: dict[str, str] | None = None) -> Beat:
        b = Beat(env or self.env, self.tmp / "beat.log", self.tmp / f"beat-{uuid.uuid4().hex}")
        self.processes.append(b)
        return b


def _apply_env(env: dict[str, str]) -> None:
    """Make this test process see the same settings as the child processes."""
    from mailer.config import reset_settings
    from mailer.db import dispose_engines
    from mailer.emails.transport import close_process_transport
    from mailer.redis import reset_redis

    os.environ.update(env)
    reset_settings()
    dispose_engines()
    reset_redis()
    close_process_transport()
    from workers.app import reset_broker

    reset_broker()


def _create_pg_database() -> tuple[str, str]:
    name = f"mailer_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    admin = psycopg.conninfo.conninfo_to_dict(PG_ADMIN)
    user, host = admin.get("user", "postgres"), admin.get("host", "127.0.0.1")
    url = f"postgresql+psycopg://{user}@{host}:{admin.get('port', 5432)}/{name}"
    return name, url


def _drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of its own on ``backend`` (no schema: the migration
    tests build it), its engines disposed and the database dropped afterwards."""
    from mailer import db

    name = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        name, url = _create_pg_database()
    try:
        yield url
    finally:
        engine = db._ENGINES.pop(url, None)
        if engine is not None:
            engine.dispose()
        if name:
            _drop_pg_database(name)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"stack-{backend}")
    pg_name = None
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp / 'mailer.db'}"
    else:
        pg_name, database_url = _create_pg_database()
    smtp = RecordingSMTPServer().start()
    web_port = free_port()
    env = {
        "MAILER_ENV": "test",
        "MAILER_SECRET_KEY": secrets.token_urlsafe(32),
        "MAILER_DATABASE_URL": database_url,
        "MAILER_REDIS_URL": f"{REDIS_BASE}/{REDIS_DB[backend]}",
        "MAILER_SMTP_URL": smtp.url,
        "MAILER_SMTP_TIMEOUT": "10",
        "MAILER_BASE_URL": f"http://127.0.0.1:{web_port}",
        "MAILER_VAR_DIR": str(tmp / "var"),
        "MAILER_OUTBOX_DIR": str(tmp / "var" / "outbox"),
        "MAILER_SIGNUP_LIMIT_PER_IP_PER_HOUR": "1000000",
        # Test readers share one domain; the limit has a test of its own.
        "MAILER_DOMAIN_RATE_LIMIT_PER_SECOND": "0",
        "MAILER_CHECK_DELIVERABILITY": "false",
        # The welcome mail is on by default (tests/test_welcome_mail.py tests that default
        # and the mail, with a web server of its own); the other tests' readers confirm
        # without one, so the mail they count is the mail they cause.
        "MAILER_WELCOME_MAIL": "false",
        # The tests' feed servers listen on 127.0.0.1; 127.0.0.2 stays refused (a loopback
        # address that is not allowed, for the tests of what a fetch may reach).
        "MAILER_FEED_ALLOWED_HOSTS": '["127.0.0.1"]',
        # The same for the webhook receivers the tests run (tests/support/receiver.py).
        "MAILER_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
        "PYTHONUNBUFFERED": "1",
    }
    saved = dict(os.environ)
    child_env = {**os.environ, **env}
    _apply_env(env)
    from mailer import migrate
    from mailer.redis import get_redis

    migrate.upgrade(database_url)
    get_redis().flushdb()  # no task of an earlier run may reach this run's processes
    s = Stack(backend, database_url, env["MAILER_REDIS_URL"], smtp, child_env, tmp, web_port)
    try:
        yield s
    finally:
        for proc in reversed(s.processes):
            proc.stop()  # type: ignore[attr-defined]
        smtp.stop()
        from mailer.db import dispose_engines

        dispose_engines()
        if pg_name:
            _drop_pg_database(pg_name)
        os.environ.clear()
        os.environ.update(saved)


def _truncate_all() -> None:
    from mailer.db import get_engine
    from mailer.models import Base

    engine = get_engine()
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    if engine.dialect.name == "postgresql":
        # A worker still finishing the previous test's task can hold a row lock; wait a
        # little, and try again rather than deadlock with it.
        for attempt in range(10):
            try:
                with engine.begin() as conn:
                    conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                    conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
                    _first_list(conn)
                    conn.execute(text("SELECT setval('mailing_list_id_seq', 1)"))
                return
            except DBAPIError:
                if attempt == 9:
                    raise
                time.sleep(0.5)
    with engine.begin() as conn:
        for name in tables:
            conn.execute(text(f"DELETE FROM {name}"))
        if _has_sqlite_sequence(conn):
            conn.execute(text("DELETE FROM sqlite_sequence"))
        _first_list(conn)


def _first_list(conn: object) -> None:
    """The list migration 0016 makes (every database has it): id 1, ``newsletter``."""
    from mailer.config import get_settings
    from mailer.lists.models import MailingList

    identity = get_settings().identity
    conn.execute(MailingList.__table__.insert().values(  # type: ignore[attr-defined]
        id=1, slug="newsletter", name=identity.list_name, description="",
        list_id=identity.list_id, public=True, archive=True, no_topics="skip", position=0,
        created_at=utcnow_()))


def utcnow_() -> object:
    from mailer.db import utcnow

    return utcnow()


def _has_sqlite_sequence(conn: object) -> bool:
    return bool(conn.execute(  # type: ignore[attr-defined]
        text("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'")).first())


@pytest.fixture
def clean(stack: Stack) -> Stack:
    """An empty database, an empty Redis database and an empty SMTP mailbox."""
    from mailer.redis import get_redis

    _truncate_all()
    get_redis().flushdb()
    stack.smtp.reset()
    return stack


@pytest.fixture(scope="session")
def worker(stack: Stack) -> Worker:
    """One Celery worker (2 prefork processes, every queue) for the session's backend."""
    return stack.worker("worker").start()  # type: ignore[return-value]


@pytest.fixture(scope="session")
def web(stack: Stack) -> WebServer:
    server = WebServer(stack.env, stack.tmp / "web.log", stack.web_port)
    stack.processes.append(server)
    return server.start()  # type: ignore[return-value]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what="condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``.

    ``what`` names the condition; a callable is asked at the end (to show the state then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def wait_settled(count, quiet: float = 1.0, timeout: float = 60.0, what="count"):  # type: ignore[no-untyped-def]
    """Wait until ``count()`` has not changed for ``quiet`` seconds, and return it.

    For "nothing more happens after X": a fixed sleep races with work still in flight on a
    busy machine; this waits for the work to stop, however long that takes."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} still changing after {timeout}s (now {last})")
        time.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


class SendingRig:
    """A private Redis, workers and beat with short timeouts, for the sending tests.

    The private Redis keeps these workers' queues apart from the session's ``worker``.
    """

    def __init__(self, stack: Stack, redis_server: object, env: dict[str, str]) -> None:
        self.stack, self.redis, self.env = stack, redis_server, env
        self.procs: list[object] = []

    def worker(self, name: str = "sender", concurrency: int = 2, **env: str) -> Worker:
        w = Worker({**self.stack.env, **self.env, **env}, self.stack.tmp / f"{name}.log",
                   name=name, concurrency=concurrency)
        self.procs.append(w)
        return w.start()  # type: ignore[return-value]

    def user_worker(self, name: str = "worker", **env: str) -> UserWorker:
        """A worker started with Procfile.dev's command line (the one users run)."""
        w = UserWorker({**self.stack.env, **self.env, **env}, self.stack.tmp / f"{name}.log")
        self.procs.append(w)
        return w.start()  # type: ignore[return-value]

    def beat(self) -> Beat:
        b = Beat({**self.stack.env, **self.env}, self.stack.tmp / "beat.log",
                 self.stack.tmp / f"beat-{uuid.uuid4().hex}")
        self.procs.append(b)
        return b.start()  # type: ignore[return-value]


SENDING_ENV = {
    "MAILER_SWEEP_EVERY_SECONDS": "1",
    "MAILER_HOLDER_HEARTBEAT_SECONDS": "0.5",
    "MAILER_HOLDER_TIMEOUT_SECONDS": "3",
    "MAILER_LEASE_SECONDS": "15",
    "MAILER_REQUEUE_AFTER_SECONDS": "3",
    "MAILER_RETRY_BASE_SECONDS": "1",
    "MAILER_RETRY_MAX_SECONDS": "3",
    "MAILER_SMTP_TIMEOUT": "3",
    "MAILER_BATCH_SIZE": "200",
    "MAILER_WEBHOOK_TIMEOUT_SECONDS": "1.5",
    "MAILER_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "MAILER_WEBHOOK_RETRY_MAX_SECONDS": "1",
    "MAILER_WEBHOOK_SWEEP_EVERY_SECONDS": "1",
    "MAILER_WEBHOOK_REQUEUE_AFTER_SECONDS": "2",
}


@pytest.fixture
def rig(clean: Stack) -> Iterator[SendingRig]:
    from tests.support.redis_server import RedisServer

    server = RedisServer(clean.tmp / f"redis-{uuid.uuid4().hex[:6]}").start()
    env = {**SENDING_ENV, "MAILER_REDIS_URL": server.url}
    base = {k: os.environ.get(k) for k in env}
    _apply_env(env)
    r = SendingRig(clean, server, env)
    try:
        yield r
    finally:
        for proc in reversed(r.procs):
            proc.stop()  # type: ignore[attr-defined]
        server.stop()
        for key, value in base.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _apply_env({})
