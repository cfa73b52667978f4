"""Reading HTML forms without ever answering a malformed body with a 5xx.

Forms are read from the raw bytes and decoded as UTF-8, whatever charset the client names
(or leaves out): browsers send UTF-8 for our pages, and a script, a CRM or a server-side
form that posts raw UTF-8 without a charset must store "Björn Ström", not "BjÃ¶rn". A
field whose bytes are not UTF-8 is not guessed at: it is reported, so that the page can
say so beside the field. (Starlette's parser reads such bytes as Latin-1, and
percent-escapes that are not UTF-8 as U+FFFD.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

#: A sign-up form is well under 10 KB; anything far larger is not one of ours.
MAX_BODY = 64 * 1024
MAX_FIELDS = 50


class BadForm(Exception):
    pass


class FormTooLarge(BadForm):
    pass


@dataclass
class Form:
    """The text fields of a form (the first value of each), and the names of the fields
    whose bytes were not UTF-8 (their value here is empty)."""

    values: dict[str, str] = field(default_factory=dict)
    undecodable: set[str] = field(default_factory=set)

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)


async def read_form(request: Request, *, max_body: int = MAX_BODY,
                    max_fields: int = MAX_FIELDS) -> Form:
    """The form's text fields; file parts are skipped.

    Raises BadForm for a body over ``max_body`` bytes, with more than ``max_fields``
    fields, or that cannot be parsed as ``application/x-www-form-urlencoded`` or
    ``multipart/form-data``. Any other content type reads as an empty form.
    """
    body = await read_body(request, max_body)
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind == b"application/x-www-form-urlencoded":
        pairs = _urlencoded(body, max_fields)
    elif kind == b"multipart/form-data":
        pairs = _multipart(body, params.get(b"boundary", b""), max_fields)
    else:
        return Form()
    form = Form()
    for raw_name, raw_value in pairs:
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            continue  # not a field of ours
        if name in form.values or name in form.undecodable:
            continue
        try:
            form.values[name] = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            form.undecodable.add(name)
            form.values[name] = ""
    return form


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (BadForm) once it is over ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise FormTooLarge("the form is too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FormTooLarge("the form is too large")
    return bytes(body)


def _urlencoded(body: bytes, max_fields: int) -> list[tuple[bytes, bytes]]:
    # Split and unquoted as bytes (parse_qsl decodes bytes as ASCII first, so it refuses
    # raw UTF-8): raw UTF-8 and its %C3%B6 spelling come out the same.
    pairs = [piece for piece in body.split(b"&") if piece]
    if len(pairs) > max_fields:
        raise BadForm("too many fields")
    out = []
    for pair in pairs:
        name, _, value = pair.partition(b"=")
        out.append((unquote_to_bytes(name.replace(b"+", b" ")),
                    unquote_to_bytes(value.replace(b"+", b" "))))
    return out


def _multipart(body: bytes, boundary: bytes, max_fields: int) -> list[tuple[bytes, bytes]]:
    if not boundary or len(boundary) > 200:
        raise BadForm("multipart/form-data without a usable boundary")
    parts: list[tuple[bytes, bytes]] = []
    headers: dict[bytes, bytes] = {}
    header_name, header_value, data = bytearray(), bytearray(), bytearray()

    def part_begin() -> None:
        headers.clear()
        data.clear()

    def header_field(chunk: bytes, start: int, end: int) -> None:
        header_name.extend(chunk[start:end])

    def header_data(chunk: bytes, start: int, end: int) -> None:
        header_value.extend(chunk[start:end])

    def header_end() -> None:
        headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def part_end() -> None:
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options or b"filename" in options:
            return  # not a text field (a file, or a part without a name)
        if len(parts) >= max_fields:
            raise BadForm("too many fields")
        parts.append((options[b"name"], bytes(data)))

    parser = MultipartParser(boundary, {
        "on_part_begin": part_begin, "on_header_field": header_field,
        "on_header_value": header_data, "on_header_end": header_end,
        "on_part_data": part_data, "on_part_end": part_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise BadForm(str(exc)) from None
    return parts


def client_ip(request: Request) -> str:
    """The client's address; behind a local reverse proxy uvicorn has already taken it from
    X-Forwarded-For, which a misconfigured proxy could fill with anything: bounded."""
    return (request.client.host if request.client else "unknown")[:64]
