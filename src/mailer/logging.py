"""Logging: JSON lines when not on a terminal, readable lines when on one.

Every record can carry ``edition_id``, ``delivery_id`` and ``task_id`` (pass them in
``extra=``), so one delivery can be followed from the trigger to the SMTP reply.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from typing import Any

_CONTEXT_KEYS = ("edition_id", "delivery_id", "subscriber_id", "task_id", "smtp_code", "event",
                 "task")

#: Fields every record logged in the current context carries (set for the time a Celery
#: task runs: its id and name, and the edition it works on), unless the call gives its own.
_context: ContextVar[dict[str, Any] | None] = ContextVar("mailer_log_context", default=None)


def bind_context(**fields: Any) -> Token[dict[str, Any] | None]:
    """Add fields to every record logged until :func:`reset_context` with the token."""
    return _context.set({**(_context.get() or {}), **fields})


def reset_context(token: Token[dict[str, Any] | None]) -> None:
    try:
        _context.reset(token)
    except ValueError:  # set in another context: forget everything instead
        _context.set(None)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _CONTEXT_KEYS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={getattr(record, k)}" for k in _CONTEXT_KEYS if hasattr(record, k)]
        return f"{line} [{' '.join(extras)}]" if extras else line


_configured = False


def setup_logging(level: int = logging.INFO) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(ContextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JSONFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger("mailer")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    workers = logging.getLogger("workers")
    workers.handlers[:] = [handler]
    workers.setLevel(level)
    workers.propagate = False  # else Celery's root handler writes every line a second time
