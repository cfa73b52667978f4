"""``/api/v1/stats``: the figures ``/metrics`` has, as JSON (``ops.metrics.figures``: the
same collector, so the two never disagree). Counts and rates only, no person's data:
readable with ``editions:read``, the scope of a dashboard that follows the sends."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from mailer.api_tokens.service import Caller
from mailer.config import get_settings
from mailer.db import utcnow
from mailer.ops import metrics
from mailer.web.api.auth import require
from mailer.web.api.problems import responses

router = APIRouter(prefix="/stats", tags=["stats"])


class Sample(BaseModel):
    #: The family's name, or with ``_total``, ``_bucket``, ``_sum``, ``_count``.
    name: str
    labels: dict[str, str]
    #: None for a value that is not a finite number.
    value: float | None


class Family(BaseModel):
    #: gauge, counter or histogram, as Prometheus has it.
    type: str
    help: str
    samples: list[Sample]


class Stats(BaseModel):
    at: dt.datetime
    #: By name, as on /metrics (``mailer_subscribers``, ``mailer_queue_depth``…). A part
    #: that could not be read is left out, and ``mailer_redis_up`` or
    #: ``mailer_database_up`` says 0.
    figures: dict[str, Family] = Field(description="metric families by name")


@router.get("", response_model=Stats, summary="The figures /metrics has, as JSON",
            responses=responses(401, 403, 422, 429))
def stats(caller: Annotated[Caller, Depends(require("editions:read"))]) -> Stats:
    """Queues, workers, SMTP replies and latency, deliveries by state, editions under way
    and their progress, bounces by class, complaint rates, subscribers by status,
    suppressions by reason, and the alerts (1 while one holds)."""
    return Stats(at=utcnow(), figures={name: Family.model_validate(family) for name, family
                                       in metrics.figures(get_settings()).items()})
