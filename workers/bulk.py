"""The bulk queue: sending an edition's deliveries in batches."""

from __future__ import annotations

from workers.app import app  # noqa: F401
