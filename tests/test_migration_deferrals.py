"""Migration 0019 (edition deferrals) up and down on SQLite and PostgreSQL: a new table
only, so an edition of before is still there, the counts go in, and the downgrade takes
the table and nothing else."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mailer import migrate
from tests.conftest import empty_database


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as database_url:
        yield database_url


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_0019_adds_the_deferral_counts_and_takes_them_away(url: str) -> None:
    now = dt.datetime(2026, 12, 3, 9, 14, tzinfo=dt.UTC)
    migrate.upgrade(url, "0018")
    engine = sa.create_engine(url)
    try:
        before = _tables(engine)
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO edition (id, slug, subject, preheader, intro, window_start, "
                "window_end, category_order, state, state_reason, created_at, updated_at, "
                "created_by, audience_count) VALUES (7, 'e7', 'Seven', '', '', :now, :now, "
                "'[]', 'sent', '', :now, :now, 'test', 3)"), {"now": now})
        assert migrate.upgrade(url, "head") == ["0019"]
        assert _tables(engine) == before | {"edition_deferral"}
        key = sa.inspect(engine).get_pk_constraint("edition_deferral")
        assert key["constrained_columns"] == ["edition_id", "minute", "domain"]
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO edition_deferral VALUES (7, :now, 'a.example', 2)"),
                         {"now": now})
            assert conn.execute(sa.text("SELECT subject FROM edition")).scalar() == "Seven"
        migrate.downgrade(url, "0018")
        assert _tables(engine) == before
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT subject FROM edition")).scalar() == "Seven"
        assert migrate.upgrade(url, "head") == ["0019"]  # and up again, empty
    finally:
        engine.dispose()
