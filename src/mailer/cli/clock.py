"""The commands' times and dates: :mod:`mailer.localtime`'s one format, in the association's
time zone (``MAILER_TIMEZONE``, read here, at the edge)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from mailer import localtime
from mailer.config import get_settings


def zone() -> ZoneInfo:
    return get_settings().identity.zone


def format_date(moment: dt.datetime | dt.date | None) -> str:
    return localtime.format_date(moment, zone=zone())


def format_time(moment: dt.datetime | None, *, seconds: bool = False) -> str:
    return localtime.format_time(moment, zone=zone(), seconds=seconds)


def window_label(start: dt.datetime, end: dt.datetime) -> str:
    return localtime.window_label(start, end, zone=zone())
