"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from mailer.db import get_engine
from mailer.redis import get_redis

router = APIRouter()


def _checks() -> dict[str, str]:
    result: dict[str, str] = {}
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        result["database"] = "ok"
    except Exception as exc:  # any driver error means "not reachable"
        result["database"] = f"error: {type(exc).__name__}"
    try:
        get_redis().ping()
        result["redis"] = "ok"
    except Exception as exc:
        result["redis"] = f"error: {type(exc).__name__}"
    return result


@router.get("/healthz")
def healthz() -> JSONResponse:
    checks = _checks()
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks},
                        status_code=200 if ok else 503)
