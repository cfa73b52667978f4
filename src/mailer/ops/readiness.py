"""Is the service ready to do its work? The database, Redis, the SMTP server, a worker.

Each check answers "ok" or "error: <what>" within ``readiness_timeout_seconds``. The SMTP
check opens a connection, says EHLO and NOOP, and quits: it proves the server answers,
not that it will accept a particular message.
"""

from __future__ import annotations

import smtplib
import ssl

import redis
from sqlalchemy import text

from mailer.config import OpsSettings, Settings
from mailer.db import get_engine
from mailer.ops import workers
from mailer.redis import get_redis


def database() -> str:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # any driver error means "not reachable"
        return f"error: {type(exc).__name__}"


def redis_server() -> str:
    try:
        get_redis().ping()
        return "ok"
    except (redis.RedisError, OSError) as exc:
        return f"error: {type(exc).__name__}"


def smtp_server(settings: Settings) -> str:
    """Does the relay of ``settings.smtp`` answer EHLO and NOOP within the readiness
    timeout?"""
    target = settings.smtp.target
    timeout = settings.ops.readiness_timeout_seconds
    try:
        conn: smtplib.SMTP
        if target.tls == "implicit":
            conn = smtplib.SMTP_SSL(target.host, target.port, timeout=timeout,
                                    context=ssl.create_default_context())
        else:
            conn = smtplib.SMTP(target.host, target.port, timeout=timeout)
        with conn:
            code, _ = conn.ehlo()
            if code != 250:
                return f"error: EHLO answered {code}"
            code, _ = conn.noop()
            if code != 250:
                return f"error: NOOP answered {code}"
        return "ok"
    except smtplib.SMTPResponseException as exc:
        return f"error: {exc.smtp_code}"
    except (OSError, smtplib.SMTPException) as exc:
        return f"error: {type(exc).__name__}"


def workers_alive(ops: OpsSettings) -> str:
    try:
        alive = workers.alive(ops=ops)
    except (redis.RedisError, OSError) as exc:
        return f"error: {type(exc).__name__}"
    return f"ok: {len(alive)}" if alive else "error: no worker has sent a heartbeat lately"


def checks(settings: Settings) -> dict[str, str]:
    return {"database": database(), "redis": redis_server(), "smtp": smtp_server(settings),
            "workers": workers_alive(settings.ops)}


def ready(results: dict[str, str]) -> bool:
    return all(value.startswith("ok") for value in results.values())
