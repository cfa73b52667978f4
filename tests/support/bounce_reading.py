"""Our addresses as the parser is handed them: the default identity, which the fixtures
under tests/fixtures/bounces/ answer (the parser reads no settings of its own)."""

from __future__ import annotations

from typing import Any

from mailer.bounces.parse import BounceReport, OurAddresses
from mailer.bounces.parse import parse_bounce as _parse_bounce
from mailer.environment import read_bounce_reading

OURS = OurAddresses.of(read_bounce_reading(environ={}, env_file=None))


def parse_bounce(raw: bytes, **kwargs: Any) -> BounceReport:
    """:func:`mailer.bounces.parse.parse_bounce` handed :data:`OURS`."""
    return _parse_bounce(raw, ours=OURS, **kwargs)
