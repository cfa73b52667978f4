"""The web app: FastAPI on uvicorn, thin routes over the domain services."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from mailer.config import get_settings
from mailer.logging import setup_logging
from mailer.paths import templates_dir
from mailer.web import admin, archive, health, public, webhooks
from mailer.web.pages import page

log = logging.getLogger(__name__)


def create_app() -> FastAPI:
    setup_logging()
    settings = get_settings()  # refuses to start with the default secret outside development
    app = FastAPI(title=settings.list_name, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(health.router)
    app.include_router(public.router)
    app.include_router(webhooks.router)
    app.include_router(archive.router)
    admin.install(app)  # the staff desk at /admin
    static = templates_dir() / "static"
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_request: Request, exc: redis.RedisError) -> HTMLResponse:
        log.error("Redis unavailable: %s", exc)
        return page("unavailable.html", 503)

    return app
