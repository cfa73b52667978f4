"""The sender processes that hold claims on delivery rows (the rows themselves are
``mailer.deliveries.models``: the bounces read them too)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mailer.db import Base, UTCDateTime, utcnow


class SenderProcess(Base):
    """A worker process that sends: the holder named by its claims.

    Its heartbeat thread writes ``beat_at`` every ``MAILER_HOLDER_HEARTBEAT_SECONDS``. A
    holder whose heartbeat stopped, or whose process is gone from this machine (same
    ``place``, the pid no longer running since ``process_start``), is gone: its claims are
    queued again (``mailer.delivery.holders``)."""

    __tablename__ = "sender_process"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: The machine's boot id and pid namespace: where ``pid`` means this process.
    place: Mapped[str] = mapped_column(String(120))
    #: The process's start time in clock ticks since boot (a reused pid differs).
    process_start: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    beat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The batch it works on now (edition and delivery id range), for the sweeper and ops.
    edition_id: Mapped[int | None] = mapped_column(Integer)
    first_id: Mapped[int | None] = mapped_column(BigInteger)
    last_id: Mapped[int | None] = mapped_column(BigInteger)
