"""Liveness (/healthz), readiness (/readyz) and metrics (/metrics).

- ``/healthz`` answers 200 whenever the process is up: a container orchestrator restarts
  the web app only when it is stuck, never because PostgreSQL or Redis is away.
- ``/readyz`` checks what the service needs to work: the database, Redis, the SMTP
  server, and at least one worker; 503 with the failing checks named otherwise.
- ``/metrics``: Prometheus's text format, for a bearer token (``MAILER_METRICS_TOKEN``)
  or a client address in ``MAILER_METRICS_NETWORKS``; anyone else gets 401/403.
"""

from __future__ import annotations

import ipaddress
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from mailer.config import get_settings
from mailer.ops import readiness
from mailer.web.forms import client_ip

router = APIRouter()


@router.get("/healthz")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


@router.get("/readyz")
def readyz() -> JSONResponse:
    results = readiness.checks(get_settings())
    ok = readiness.ready(results)
    return JSONResponse({"status": "ready" if ok else "not ready", **results},
                        status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})


def metrics_access(request: Request) -> int:
    """200 when the request may read /metrics, else 401 (a token is configured and the
    request has none or a wrong one) or 403."""
    settings = get_settings()
    token = settings.ops.metrics_token.get_secret_value() if settings.ops.metrics_token else ""
    given = request.headers.get("authorization", "")
    if token and given.lower().startswith("bearer ") and secrets.compare_digest(
            given[7:].strip().encode(), token.encode()):
        return 200
    try:
        address = ipaddress.ip_address(client_ip(request))
    except ValueError:
        address = None
    if address is not None:
        for network in settings.ops.metrics_networks:
            try:
                if address in ipaddress.ip_network(network, strict=False):
                    return 200
            except ValueError:
                continue
    return 401 if token else 403


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    from mailer.ops.metrics import CONTENT_TYPE, render

    status = metrics_access(request)
    if status != 200:
        headers = {"WWW-Authenticate": 'Bearer realm="metrics"'} if status == 401 else {}
        return PlainTextResponse("Not allowed to read the metrics.\n", status_code=status,
                                 headers=headers)
    body = await run_in_threadpool(render, get_settings())
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
