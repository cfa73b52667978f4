"""Reading HTML forms without ever answering a malformed body with a 5xx."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

MAX_FIELD = 5000
#: A sign-up form is well under 10 KB; anything far larger is not one of ours.
MAX_BODY = 64 * 1024


class BadForm(Exception):
    pass


async def read_form(request: Request) -> dict[str, str]:
    """The form's text fields (first value of each); files and oversized values dropped.

    Raises BadForm for a body that is too large or cannot be parsed as
    ``application/x-www-form-urlencoded`` or ``multipart/form-data``. Any other content
    type reads as an empty form.
    """
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > MAX_BODY:
        raise BadForm("the form is too large")
    try:
        form = await request.form(max_files=0, max_fields=50)
    except Exception as exc:  # multipart/urlencoded parse errors of every kind
        raise BadForm(str(exc)) from None
    out: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile) or key in out:
            continue
        out[key] = value[:MAX_FIELD]
    return out


def client_ip(request: Request) -> str:
    """The client's address; behind a local reverse proxy uvicorn has already taken it from
    X-Forwarded-For, which a misconfigured proxy could fill with anything: bounded."""
    return (request.client.host if request.client else "unknown")[:64]
