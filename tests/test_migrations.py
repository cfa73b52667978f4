"""The migration history is one line: a second head would make the next
``mailer db revision`` fail with "multiple heads"."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from mailer import migrate, models
from mailer.migrate import alembic_config


def test_the_history_has_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"more than one Alembic head: {sorted(heads)}"


def test_every_revision_after_the_join_has_one_parent() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    joined = False
    for rev in reversed(list(script.walk_revisions())):  # oldest first
        if rev.revision == "0004":
            joined = True
            continue
        if joined:
            assert isinstance(rev.down_revision, str), (
                f"revision {rev.revision} has parents {rev.down_revision}: "
                "revise the single head instead")


#: Indexes the models declare for PostgreSQL only (migration 0014: pg_trgm's GIN index).
PG_ONLY = {"ix_subscriber_email_key_trgm"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migrated_schema_is_the_models_schema(backend: str, tmp_path) -> None:
    """Every table, column, index and constraint the models declare is what the migrations
    build, on both databases: a model changed without a migration (or moved and lost) fails."""
    from tests.conftest import empty_database

    with empty_database(backend, tmp_path) as url:
        migrate.upgrade(url)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn), models.Base.metadata)
        finally:
            engine.dispose()
    if backend == "sqlite":  # PostgreSQL's alone: SQLite has no trigram index
        diff = [d for d in diff if not (d[0] == "add_index" and d[1].name in PG_ONLY)]
    assert diff == []
