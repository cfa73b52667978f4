"""Bounce processing tasks."""

from __future__ import annotations

from workers.app import app  # noqa: F401
