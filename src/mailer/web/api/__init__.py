"""``/api/v1``: the JSON API for other systems (the website's forms, a CRM), a FastAPI
sub-application with its own OpenAPI description (``/api/v1/openapi.json``), docs
(``/api/v1/docs``), bearer tokens (``mailer tokens``) and RFC 9457 errors.

Routes are thin, as the pages' are: they check the token (``auth.require``), read the
input, call the domain's service or query in one transaction, and shape the answer."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailer.config import get_settings
from mailer.web.api import (
    articles,
    bounces,
    docs,
    edition_articles,
    editions,
    lists,
    stats,
    subscribers,
    suppressions,
)
from mailer.web.api.problems import (
    ApiProblem,
    on_api_problem,
    on_http_error,
    on_validation_error,
    problem,
)

log = logging.getLogger(__name__)

PREFIX = "/api/v1"


def create_api() -> FastAPI:
    settings = get_settings()
    api = FastAPI(
        title=f"{settings.identity.list_name} API", version="1",
        description="Subscribers of the newsletter, for the association's other systems. "
                    "Authenticate with `Authorization: Bearer <token>` (`mailer tokens "
                    "create`). Errors are RFC 9457 problem details.",
        openapi_url="/openapi.json", docs_url=None, redoc_url=None,
        servers=[{"url": PREFIX}],
    )
    api.include_router(subscribers.router)
    api.include_router(suppressions.router)
    api.include_router(lists.router)
    api.include_router(articles.router)
    api.include_router(bounces.router)
    api.include_router(stats.router)
    api.include_router(editions.router)
    api.include_router(edition_articles.router)
    docs.install(api)
    api.add_exception_handler(ApiProblem, on_api_problem)
    api.add_exception_handler(StarletteHTTPException, on_http_error)
    api.add_exception_handler(RequestValidationError, on_validation_error)

    @api.exception_handler(redis.RedisError)
    async def _redis_down(_request: Request, exc: redis.RedisError) -> JSONResponse:
        log.error("Redis unavailable: %s", exc)
        return problem(503, "The service is unavailable for a moment; try again.",
                       headers={"Retry-After": "30"})

    return api
