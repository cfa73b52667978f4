"""Provider webhooks: POST /webhooks/{ses,sendgrid,mailgun,postmark}.

Thin: read the body (bounded), let the provider's module verify it and turn it into
events, apply them in one transaction. A refusal answers its 4xx with the reason as JSON
and changes nothing; see :mod:`mailer.bounces.webhooks`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mailer.bounces.webhooks import (
    MAX_BODY_BYTES,
    WebhookRefused,
    apply_events,
    mailgun,
    postmark,
    sendgrid,
    ses,
)
from mailer.config import get_settings
from mailer.db import transaction

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks")

_PROVIDERS = {"ses": ses, "sendgrid": sendgrid, "mailgun": mailgun, "postmark": postmark}


@router.post("/{provider}")
async def webhook(provider: str, request: Request) -> JSONResponse:
    if provider not in _PROVIDERS:
        return JSONResponse({"error": f"no webhook for {provider!r}"}, status_code=404)
    try:
        body = await _read_body(request)
        applied = await run_in_threadpool(_apply, provider, body, request.headers)
    except WebhookRefused as exc:
        log.warning("webhook refused: %s", exc.reason,
                    extra={"provider": provider, "status": exc.status})
        headers = {"WWW-Authenticate": 'Basic realm="webhooks"'} if exc.status == 401 else None
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)
    return JSONResponse({"status": "ok", **applied})


def _apply(provider: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    settings = get_settings()
    bounces = settings.bounces  # the providers' keys, the replay window, the soft-bounce rule
    token = None
    if provider == "mailgun":
        events, token = mailgun.events_from(body, headers, bounces)
    else:
        events = _PROVIDERS[provider].events_from(body, headers, bounces)
    with transaction() as session:
        return apply_events(session, provider, events, bounces=bounces,
                            keys=settings.all_secrets, replay_token=token).as_dict()


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise WebhookRefused(413, f"the body is over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise WebhookRefused(413, f"the body is over {MAX_BODY_BYTES} bytes")
    return bytes(body)
