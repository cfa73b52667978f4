"""``mailer check`` and ``mailer db upgrade``, the first two commands of ``make run``, in
child processes as a newcomer runs them: each part named, one line per problem, no traceback.

Measured before: with PostgreSQL down ``mailer check`` said "Redis: ok" and exited 0, then
``db upgrade`` printed a 100-line traceback; on a fresh database ``db upgrade`` said only
"database is up to date".
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from mailer.migrate import alembic_config
from tests.conftest import REDIS_BASE, REDIS_DB, empty_database
from tests.support.processes import free_port

MAILER = Path(sys.executable).with_name("mailer")
SCRIPT = ScriptDirectory.from_config(alembic_config("sqlite://"))
HEAD = SCRIPT.get_current_head()
ALL_REVISIONS = {rev.revision for rev in SCRIPT.walk_revisions()}


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A newcomer's environment: nothing of the test stack's MAILER_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    return {**env, "MAILER_VAR_DIR": str(tmp_path / "var"),
            "MAILER_REDIS_URL": f"{REDIS_BASE}/{REDIS_DB['sqlite']}", **settings}


def _mailer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MAILER), *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, no schema yet."""
    with empty_database(request.param, tmp_path) as url:
        yield url


def test_check_names_the_database_and_redis_it_uses(tmp_path: Path, fresh_database: str) -> None:
    done = _mailer(_env(tmp_path, MAILER_DATABASE_URL=fresh_database), "check")
    assert done.returncode == 0, done.stderr
    database, redis_line = done.stdout.splitlines()
    assert database.startswith(f"Database: ok, {fresh_database}")
    assert f"no schema yet: `mailer db upgrade` applies 0001 … {HEAD}" in database
    assert redis_line == f"Redis: ok, {REDIS_BASE}/{REDIS_DB['sqlite']}"


def test_check_with_postgresql_and_redis_down_says_so_in_one_line_each(tmp_path: Path) -> None:
    closed = free_port()
    env = _env(tmp_path,
               MAILER_DATABASE_URL=f"postgresql+psycopg://mailer:s3cret@127.0.0.1:{closed}/mailer",
               MAILER_REDIS_URL=f"redis://:hunter2@127.0.0.1:{closed}/0")
    done = _mailer(env, "check")
    assert done.returncode == 1
    assert done.stdout == ""
    database, redis_line = done.stderr.splitlines()  # one line per problem, nothing else
    assert database.startswith(
        f"Database: not reachable at postgresql+psycopg://mailer:***@127.0.0.1:{closed}/mailer (")
    assert "Connection refused" in database and "MAILER_DATABASE_URL" in database
    assert redis_line.startswith(f"Redis: not reachable at redis://:***@127.0.0.1:{closed}/0 (")
    assert "MAILER_REDIS_URL" in redis_line
    assert "s3cret" not in done.stderr and "hunter2" not in done.stderr  # passwords masked


def test_check_with_only_the_database_down_still_fails(tmp_path: Path) -> None:
    closed = free_port()
    env = _env(tmp_path, MAILER_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{closed}/x")
    done = _mailer(env, "check")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [f"Redis: ok, {REDIS_BASE}/{REDIS_DB['sqlite']}"]
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("Database: not reachable")


def test_db_upgrade_says_which_revisions_it_applied(tmp_path: Path, fresh_database: str) -> None:
    env = _env(tmp_path, MAILER_DATABASE_URL=fresh_database)
    first = _mailer(env, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    said, to = first.stdout.strip().removeprefix("applied ").split(" to ")
    assert to == fresh_database
    applied = said.split(", ")  # every revision once, oldest first
    assert sorted(applied) == sorted(ALL_REVISIONS) and applied[0] == "0001"
    assert applied[-1] == HEAD
    again = _mailer(env, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"already up to date: {fresh_database} is at {HEAD}"
    check = _mailer(env, "check")
    assert f"(schema at {HEAD}, the latest)" in check.stdout


def test_db_upgrade_with_the_database_down_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    closed = free_port()
    env = _env(tmp_path,
               MAILER_DATABASE_URL=f"postgresql+psycopg://mailer:s3cret@127.0.0.1:{closed}/mailer")
    done = _mailer(env, "db", "upgrade")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("Database: not reachable at postgresql+psycopg://mailer:***@")
