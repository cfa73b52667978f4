"""The ``mailer`` command imports only what the command that runs uses.

Start-up time is measured by bench/cli_startup.py (against ``python -c pass`` in the same
run); here the behaviour behind it is checked: which packages a command pulls in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from mailer.cli import COMMANDS, load

CORPUS = Path(__file__).parent / "fixtures" / "bounces"
HEAVY = ("sqlalchemy", "celery", "kombu", "fastapi", "starlette", "premailer", "flufl",
         "alembic", "psycopg", "redis", "jinja2", "rich")


def _imported(tmp_path: Path, env: dict[str, str], *args: str) -> set[str]:
    """The top-level packages a real ``mailer …`` run had imported when it exited."""
    out = tmp_path / "modules.json"
    code = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write("
        "json.dumps(sorted({m.split('.')[0] for m in sys.modules}))))\n"
        f"sys.argv = ['mailer', *{list(args)!r}]\n"
        "from mailer.cli import main\nmain()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text()))


@pytest.fixture
def no_database(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'absent.db'}",
            "MAILER_VAR_DIR": str(tmp_path)}


def test_help_imports_no_command(tmp_path: Path, no_database: dict[str, str]) -> None:
    imported = _imported(tmp_path, no_database, "--help")
    assert not imported & {*HEAVY, "pydantic_settings", "email_validator"}, imported & {
        *HEAVY, "pydantic_settings"}


def test_classify_without_a_database_imports_the_parser_only(
        tmp_path: Path, no_database: dict[str, str]) -> None:
    imported = _imported(tmp_path, no_database, "bounces", "classify", "--json",
                         str(CORPUS / "postfix-user-unknown.eml"))
    assert "mailer" in imported
    assert not imported & set(HEAVY), imported & set(HEAVY)


def test_classify_reads_no_database_unless_asked(tmp_path: Path, clean) -> None:
    """With a database there, classify alone still loads none of it; --attribute does."""
    bounce = str(CORPUS / "postfix-user-unknown.eml")
    alone = _imported(tmp_path, clean.env, "bounces", "classify", bounce)  # the table
    assert not alone & set(HEAVY), alone & set(HEAVY)  # rich included
    attributed = _imported(tmp_path, clean.env, "bounces", "classify", "--attribute", bounce)
    assert "sqlalchemy" in attributed


def test_evaluate_imports_no_database_layer(tmp_path: Path,
                                            no_database: dict[str, str]) -> None:
    imported = _imported(tmp_path, no_database, "bounces", "evaluate", "--part", "dev",
                         str(CORPUS))
    assert not imported & {"sqlalchemy", "celery", "fastapi", "premailer", "psycopg"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_lazy_command_loads_with_the_help_the_table_shows(name: str) -> None:
    command = load(name)
    assert command.name == name
    own_help = (command.help or "").strip().splitlines()[0]
    assert own_help == COMMANDS[name][2], (
        "the help line in mailer.cli.COMMANDS must be the module's own")
    if isinstance(command, typer.core.TyperGroup):
        assert command.list_commands(None)  # type: ignore[arg-type]


def test_the_bounce_patterns_compile_when_first_used() -> None:
    """Importing the reader and the classifier compiles none of their 64 patterns (a
    sizeable part of classify's start-up); one bounce compiles only those it is tested against."""
    code = (
        "import gc, re\n"
        "from mailer.bounces import patterns\n"
        "import mailer.bounces.parse, mailer.bounces.classify\n"
        "held = [o for o in gc.get_objects() if isinstance(o, patterns.Pattern)]\n"
        "before = sum(p._compiled is not None for p in held)\n"
        "from mailer.bounces.parse import OurAddresses, parse_bounce\n"
        f"parse_bounce(open({str(CORPUS / 'postfix-user-unknown.eml')!r}, 'rb').read(),\n"
        "             ours=OurAddresses('newsletter@example.org', 'bounces.example.org'))\n"
        "after = sum(p._compiled is not None for p in held)\n"
        "print(len(held), before, after)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    held, before, after = map(int, done.stdout.split())
    assert held > 50
    assert before == 0
    assert 0 < after < held / 2
