"""The migration history is one line: a second head would make the next
``mailer db revision`` fail with "multiple heads"."""

from __future__ import annotations

from alembic.script import ScriptDirectory

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
