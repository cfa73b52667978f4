"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error of the API has the same shape: ``type``, ``title``, ``status``, ``detail``, and
for a request that cannot be used (422) ``errors``, one entry per wrong field, naming it
(``email``, ``consent``, ``limit``) as the client sent it."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem: what went wrong, for people (title, detail) and programs."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    errors: list[FieldError] | None = None


class ApiProblem(Exception):
    """Raised by a route or a dependency: answered as a problem with these values."""

    def __init__(self, status: int, detail: str, *, errors: list[FieldError] | None = None,
                 headers: dict[str, str] | None = None,
                 extensions: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers
        #: RFC 9457 extension members, beside the standard ones (a refused send's ``checks``).
        self.extensions = extensions


def problem(status: int, detail: str = "", *, errors: list[FieldError] | None = None,
            headers: dict[str, str] | None = None,
            extensions: dict[str, Any] | None = None) -> JSONResponse:
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, errors=errors)
    return JSONResponse({**body.model_dump(exclude_none=True), **(extensions or {})},
                        status_code=status, media_type=MEDIA_TYPE, headers=headers)


def field_errors(**messages: str) -> list[FieldError]:
    return [FieldError(field=name, message=text) for name, text in messages.items()]


#: For the OpenAPI description: the problems a route may answer with.
def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem, "description": HTTPStatus(code).phrase,
                   "content": {MEDIA_TYPE: {}}} for code in codes}


async def on_api_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return problem(exc.status, exc.detail, errors=exc.errors, headers=exc.headers,
                   extensions=exc.extensions)


async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem(exc.status_code, str(exc.detail) if exc.detail else "",
                   headers=getattr(exc, "headers", None))


#: What a value that does not match its field's pattern is, in words (a regular
#: expression is no message for a person).
_CONTROL = "This cannot contain line breaks, tabs or other invisible control characters."
_PATTERN_WORDS = {"email": "This is not an email address.", "ip": "This is not an IP address.",
                  "after": "This is the `next` of a page: digits only."}


async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation errors, one per field, named as the client wrote them."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        # ("body", "email") → "email"; ("query", "limit") → "limit"; the whole body → "body"
        name = ".".join(location[1:]) or (location[0] if location else "request")
        kind = error.get("type")
        if kind == "extra_forbidden" and name == "email":
            message = ("An address is not changed here: sign the new address up (POST "
                       "/subscribers, double opt-in) and unsubscribe the old one.")
        elif kind == "string_pattern_mismatch":
            message = _PATTERN_WORDS.get(location[-1] if location else name, _CONTROL)
        elif name == "consent":
            message = "The person must have agreed to the consent text: consent is true."
        else:
            message = str(error.get("msg", "is not valid"))
        errors.append(FieldError(field=name, message=message))
    return problem(422, "The request has fields that are missing or wrong.", errors=errors)
