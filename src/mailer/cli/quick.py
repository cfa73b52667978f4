"""Command lines served without Typer: ``mailer bounces classify [--json] FILE…``.

Typer, click and pydantic (Typer converts parameters with it) took about two thirds of
that command's start-up; a bounce is classified in a few milliseconds. So :func:`run_quickly`
reads this one command line itself and runs the very function the Typer command runs
(:func:`mailer.cli.classify.run_classify`). Anything it is not sure of — ``--attribute``,
``--help``, any other option, ``--``, a file that does not exist — goes to Typer instead,
which then parses, checks and answers as it always did (its errors included).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The options the quick path knows, each a flag of ``mailer bounces classify``.
CLASSIFY_FLAGS = {"--json": "as_json"}


def run_quickly(argv: list[str]) -> int | None:
    """Run ``argv`` (without the program name) here and give its exit status, or None when
    it is for Typer."""
    if argv[:2] != ["bounces", "classify"]:
        return None
    flags = {name: False for name in CLASSIFY_FLAGS.values()}
    files: list[Path] = []
    for arg in argv[2:]:
        if arg in CLASSIFY_FLAGS:
            flags[CLASSIFY_FLAGS[arg]] = True
        elif arg.startswith("-") or not arg:
            return None  # --attribute, --help, --, a typo: Typer's to parse and answer
        else:
            path = Path(arg)
            if not path.exists() or not os.access(path, os.R_OK):
                return None  # Typer says which file, and why, in its words
            files.append(path)
    if not files:
        return None
    from mailer.cli.classify import run_classify

    # Ended as Typer ends a command: 130 when interrupted, 1 quietly when the reader of the
    # output went away (``| head``).
    try:
        return run_classify(files, attribute=False, **flags)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to say
        return 1
