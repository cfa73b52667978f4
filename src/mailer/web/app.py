"""The web app: FastAPI on uvicorn, thin routes over the domain services."""

from __future__ import annotations

import gc
import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from mailer.config import get_settings
from mailer.logging import setup_logging
from mailer.paths import templates_dir
from mailer.web import admin, api, archive, clicks, health, preferences, public, webhooks
from mailer.web.api.problems import problem
from mailer.web.pages import page

log = logging.getLogger(__name__)


class RefuseNul:
    """A NUL character in a URL's path or query is no text anything here keeps (PostgreSQL
    refuses it in every string it is handed): such a request is answered 400 at the door,
    before a route passes it to a query. Forms refuse control characters field by field."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").lower()
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                answer: Response = PlainTextResponse(
                    "A NUL character (%00) is not allowed in a URL.", 400)
                if scope["path"].startswith(api.PREFIX + "/"):  # the API's errors are JSON
                    answer = problem(400, "A NUL character (%00) is not allowed in a URL.")
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


class MailerApp(FastAPI):
    """The web app, with the followed links of editions (``/r/…``) answered at its door by
    :class:`mailer.web.clicks.Follow`, before Starlette's middleware and routing: they are
    most of the requests it gets, and the ones that must be quick."""

    follow: clicks.Follow | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.follow is not None and scope["type"] == "http"
                and scope["path"].startswith(clicks.PREFIX)):
            await self.follow(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app() -> FastAPI:
    setup_logging()
    logging.getLogger("uvicorn.access").addFilter(clicks.LeaveClicksOut())
    settings = get_settings()  # refuses to start with the default secret outside development
    app = MailerApp(title=settings.identity.list_name, docs_url=None, redoc_url=None,
                    openapi_url=None)
    app.follow = clicks.Follow(keys=settings.all_secrets)
    app.add_middleware(RefuseNul)
    app.include_router(health.router)
    app.include_router(public.router)
    app.include_router(preferences.router)
    app.include_router(webhooks.router)
    app.include_router(archive.router)
    admin.install(app)  # the staff desk at /admin
    app.mount(api.PREFIX, api.create_api())  # the JSON API, with its own OpenAPI and docs
    static = templates_dir() / "static"
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # A path under /api/v1/ that the mount does not take (a newline in it: Starlette's
        # mount pattern stops there) is the API's 404 all the same, as a problem.
        if request.url.path.startswith(api.PREFIX + "/"):
            return problem(exc.status_code, str(exc.detail or ""))
        return await http_exception_handler(request, exc)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_request: Request, exc: redis.RedisError) -> HTMLResponse:
        log.error("Redis unavailable: %s", exc)
        return page("unavailable.html", 503)

    _freeze_what_startup_made()
    return app


def _freeze_what_startup_made() -> None:
    """Leaves what the process has made so far (the modules, the routes, the settings: about
    170,000 objects) out of the garbage collector's full passes, which otherwise walk them
    all: 100 ms or more in which the process answers no one, every few thousand requests,
    and so the whole site's p99. None of it is garbage; it lives as long as the process."""
    gc.collect()
    gc.freeze()
