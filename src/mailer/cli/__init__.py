"""The ``mailer`` command.

:func:`main` first tries the quick paths of :mod:`mailer.cli.quick`: a command line they
serve (``mailer bounces classify FILE…`` without ``--attribute``) runs without importing
Typer, click or pydantic, which together were most of its start-up. Every other command
line goes to the Typer app of :mod:`mailer.cli.commands` (also ``mailer.cli.app``), whose
own commands are imported only when used.
"""

from __future__ import annotations

import sys
from typing import Any

#: What ``from mailer.cli import …`` finds in :mod:`mailer.cli.commands` (imported then).
_TYPER_SIDE = ("app", "COMMANDS", "LazyGroup", "load", "root", "check")


def main() -> None:
    from mailer.cli.quick import run_quickly
    from mailer.logging import setup_logging

    setup_logging()
    code = run_quickly(sys.argv[1:])
    if code is not None:
        raise SystemExit(code)
    from mailer.cli.commands import app

    app()


def __getattr__(name: str) -> Any:
    if name in _TYPER_SIDE:
        from mailer.cli import commands

        return getattr(commands, name)
    raise AttributeError(f"module 'mailer.cli' has no attribute {name!r}")
