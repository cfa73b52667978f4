"""``/api/v1/docs``: Swagger UI from our own server, under a strict CSP.

The page loads Swagger UI's script and stylesheet from fastapi-offline's copy (served here
under ``/api/v1/docs/static/``) and its start-up script from ``/api/v1/docs/init.js``: no
request leaves for a CDN, and no inline script is needed, so the policy allows scripts
from this origin only (``script-src 'self'``)."""

from __future__ import annotations

import importlib.resources

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} – API</title>
<link rel="stylesheet" href="/api/v1/docs/static/swagger-ui.css">
<link rel="icon" href="/api/v1/docs/static/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/v1/docs/static/swagger-ui-bundle.js"></script>
<script src="/api/v1/docs/init.js"></script>
</body>
</html>
"""

# validatorUrl null: Swagger UI would otherwise ask validator.swagger.io about the schema.
_INIT = """window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout"
});
"""


def install(api: FastAPI) -> None:
    static = importlib.resources.files("fastapi_offline") / "static"
    api.mount("/docs/static", StaticFiles(directory=str(static)), name="api-docs-static")

    @api.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_PAGE.format(title=api.title), headers=HEADERS)

    @api.get("/docs/init.js", include_in_schema=False)
    def init() -> Response:
        return Response(_INIT, media_type="text/javascript", headers=HEADERS)
