"""Times and dates as the association reads them: one format everywhere.

Every time a person reads — in the admin, the progress page, the ``mailer`` command, the
mails to editors — is written in the association's time zone (``MAILER_TIMEZONE``; each
function is handed it, ``zone=identity.zone``), on a 24-hour clock, with the zone named:
"3 March 2026, 09:00 CET". Dates read "3 March 2026". Month names are written out here
rather than by ``strftime``, which follows the machine's locale. Machine-readable output
(JSON, CSV, the audit details) keeps ISO 8601.

A window of articles is stored as [start, end): the end is the first moment *not*
included, so "up to and including 31 December" is stored as 1 January 00:00. People are
shown the last day the window includes (:func:`window_label`), never the stored end.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


def local(moment: dt.datetime, *, zone: ZoneInfo) -> dt.datetime:
    return moment.astimezone(zone)


def zone_name(moment: dt.datetime, *, zone: ZoneInfo) -> str:
    """The zone's abbreviation at that moment (CET, CEST, GMT…); where the zone has none,
    its offset from UTC ("UTC-03")."""
    name = local(moment, zone=zone).tzname() or ""
    return f"UTC{name}" if name[:1] in ("+", "-") else name


def format_date(moment: dt.datetime | dt.date | None, *, zone: ZoneInfo) -> str:
    """3 March 2026 (a datetime is read in ``zone``)."""
    if moment is None:
        return ""
    day = local(moment, zone=zone).date() if isinstance(moment, dt.datetime) else moment
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def format_time(moment: dt.datetime | None, *, zone: ZoneInfo, seconds: bool = False) -> str:
    """3 March 2026, 09:00 CET (or 09:00:05 CET with ``seconds``)."""
    if moment is None:
        return ""
    at = local(moment, zone=zone)
    clock = f"{at:%H:%M:%S}" if seconds else f"{at:%H:%M}"
    return f"{format_date(at, zone=zone)}, {clock} {zone_name(at, zone=zone)}"


def format_clock(moment: dt.datetime, *, zone: ZoneInfo) -> str:
    """09:00:05 CET: the time of day alone, for "last updated" lines."""
    at = local(moment, zone=zone)
    return f"{at:%H:%M:%S} {zone_name(at, zone=zone)}"


def last_day(window_end: dt.datetime, *, zone: ZoneInfo) -> dt.date:
    """The last day a window ending (exclusively) at ``window_end`` includes, in ``zone``."""
    return local(window_end - dt.timedelta(microseconds=1), zone=zone).date()


def window_label(start: dt.datetime, end: dt.datetime, *, zone: ZoneInfo) -> str:
    """1 December 2025 – 31 December 2025: both days included."""
    return f"{format_date(start, zone=zone)} – {format_date(last_day(end, zone=zone), zone=zone)}"


def midnight(day: dt.date, *, zone: ZoneInfo) -> dt.datetime:
    """The first moment of ``day`` in ``zone``: where a window that starts on it begins, and
    one that includes the day before it ends."""
    return dt.datetime.combine(day, dt.time(), tzinfo=zone)
