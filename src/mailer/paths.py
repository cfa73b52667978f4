"""Where the project's non-Python files are, wherever the package runs from.

They are the top-level ``templates/`` and ``migrations/`` folders of the checkout the package
is installed from (``pip install -e .``, as ``make`` and the Docker image do). A packaged
copy under ``mailer/_templates`` and ``mailer/_migrations`` is used when present, and
``MAILER_TEMPLATES_DIR`` overrides the templates.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(packaged: str, top_level: str) -> Path:
    inside = _PACKAGE / packaged
    if inside.is_dir():
        return inside
    checkout = _PACKAGE.parent.parent / top_level  # src/mailer -> repository root
    if checkout.is_dir():
        return checkout
    raise RuntimeError(f"cannot find the {top_level}/ folder next to {_PACKAGE}")


def templates_dir() -> Path:
    override = os.environ.get("MAILER_TEMPLATES_DIR")
    return Path(override) if override else _find("_templates", "templates")


def migrations_dir() -> Path:
    return _find("_migrations", "migrations")
