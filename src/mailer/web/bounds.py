"""Bounds on the numbers a request may carry in its path, query or form.

Every id is a database integer (PostgreSQL's INTEGER, at most 2³¹ − 1); a larger number
from a URL would reach the driver and fail there (SQLite cannot even bind one over 2⁶³),
so it is refused at the door with a 4xx.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

MAX_ID = 2**31 - 1
#: A row id in a path: 1 … MAX_ID, else FastAPI answers 422.
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
#: No list has this many pages; a larger page number shows the last one there is.
MAX_PAGE = 1_000_000


def id_or_none(text: str) -> int | None:
    """A row id written in a form or a query string, or None when it is not one."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def page_number(page: int) -> int:
    return min(max(1, page), MAX_PAGE)
