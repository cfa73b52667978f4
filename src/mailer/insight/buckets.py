"""Times and addresses cut into the pieces the figures are counted by, per database.

Each returns a SQL expression that yields text: a minute (``2026-12-03 09:14``), the
Monday a week starts on (``2026-11-30``), an address's domain (lower case). All in UTC.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlalchemy.orm import Session


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def minute(session: Session, column: Any) -> Any:
    if _postgres(session):
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24:MI")
    return func.strftime("%Y-%m-%d %H:%M", column)


def week(session: Session, column: Any) -> Any:
    if _postgres(session):
        return func.to_char(func.date_trunc("week", func.timezone("UTC", column)), "YYYY-MM-DD")
    return func.date(column, "-6 days", "weekday 1")


def domain(session: Session, column: Any) -> Any:
    if _postgres(session):
        return func.lower(func.split_part(column, "@", 2))
    return func.lower(func.substr(column, func.instr(column, "@") + 1))
