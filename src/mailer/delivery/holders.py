"""Who holds a claim, and whether it is still there.

Every worker process that sends registers itself once as a ``sender_process`` row (its
host, pid, where that pid means something, and when the process started) and names that
row in each claim it makes (``delivery.holder_id``). A daemon thread writes the row's
heartbeat every ``holder_heartbeat_seconds``.

A holder is **gone** when
- its process is no longer running, seen from the same machine and pid namespace (its
  ``place``): the batch Celery hands out again after a pool process was killed finds this
  out the moment it starts, and queues the dead process's claims again at once; or
- its heartbeat is older than ``holder_timeout_seconds``: a whole worker killed, a machine
  lost. The sweeper, which runs every few seconds, finds these.

The heartbeat lives in the database, not in Redis: a Redis restart must not make every
live holder look gone (its claims would be sent twice). Hosts need synchronised clocks
(NTP) for the timeout to mean the same everywhere.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from mailer.config import SendingSettings
from mailer.db import get_engine, utcnow
from mailer.deliveries.models import Delivery, DeliveryState
from mailer.delivery.models import SenderProcess
from mailer.editions.models import Edition, EditionState

log = logging.getLogger(__name__)
D = DeliveryState
_process = cast(Table, SenderProcess.__table__)


def this_place() -> str:
    """This machine's boot and pid namespace: two processes with the same place can ask the
    kernel whether the other's pid still runs."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:  # not Linux: no process can vouch for another, the heartbeat decides
        return f"{socket.gethostname()}/{os.getpid()}/{id(object())}"


def process_start(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot; 0 if there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return 0


def is_running(pid: int, started: int) -> bool:
    """Is the process that started at ``started`` still running as ``pid`` here?"""
    now = process_start(pid)
    return now != 0 and now == started


# --- this process as a holder ----------------------------------------------------------------


class _Me:
    """This process's sender_process row and the thread that keeps it beating."""

    def __init__(self) -> None:
        self.id: int | None = None
        self.pid = 0
        self.lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder_id(self, sending: SendingSettings) -> int:
        """This process's holder id, registered (and beating every
        ``sending.holder_heartbeat_seconds``) on first use."""
        with self._lock:
            if self.id is None or self.pid != os.getpid() or self.lost:
                self._register(sending.holder_heartbeat_seconds)
            assert self.id is not None
            return self.id

    def _register(self, interval: float) -> None:
        now = utcnow()
        pid = os.getpid()
        with get_engine().begin() as conn:
            self.id = int(conn.execute(insert(_process).values(
                host=socket.gethostname()[:255], pid=pid, place=this_place(),
                process_start=process_start(pid), started_at=now, beat_at=now,
            ).returning(_process.c.id)).scalar_one())
        self.pid, self.lost = pid, False
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, args=(interval,),
                                            name="mailer-holder-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            me = self.id
            if me is None or self.pid != os.getpid():
                return  # a forked child: it registers itself when it sends
            try:
                with get_engine().begin() as conn:
                    found = conn.execute(update(_process).where(_process.c.id == me)
                                         .values(beat_at=utcnow())).rowcount
                if not found:  # declared gone (a long pause): claims anew under a new id
                    log.warning("sender process %s was declared gone; registering again", me)
                    self.lost = True
            except Exception as exc:  # the database is away: keep trying
                log.warning("holder heartbeat not written: %s", exc)

    def working_on(self, sending: SendingSettings, edition_id: int | None,
                   first_id: int | None = None, last_id: int | None = None) -> None:
        """Say which batch this process works on (the sweeper leaves its queued rows alone)."""
        me = self.holder_id(sending)
        with get_engine().begin() as conn:
            conn.execute(update(_process).where(_process.c.id == me).values(
                edition_id=edition_id, first_id=first_id, last_id=last_id, beat_at=utcnow()))

    def leave(self) -> None:
        """A clean exit: stop beating and remove the row (this process holds no claim)."""
        self._stop.set()
        me, self.id = self.id, None
        if me is None or self.pid != os.getpid():
            return
        try:
            with get_engine().begin() as conn:
                conn.execute(delete(_process).where(_process.c.id == me))
        except Exception as exc:
            log.warning("could not remove sender process %s: %s", me, exc)


me = _Me()


# --- who is gone, and reclaiming what they held -----------------------------------------------


def gone(session: Session, sending: SendingSettings, holder_ids: set[int] | None = None,
         now: dt.datetime | None = None) -> set[int]:
    """The holders (of ``holder_ids``, or all) that are gone: silent longer than
    ``sending.holder_timeout_seconds``, missing, or not running any more on this machine."""
    now = now or utcnow()
    silent_since = now - dt.timedelta(seconds=sending.holder_timeout_seconds)
    query = select(_process.c.id, _process.c.place, _process.c.pid, _process.c.process_start,
                   _process.c.beat_at)
    if holder_ids is not None:
        if not holder_ids:
            return set()
        query = query.where(_process.c.id.in_(sorted(holder_ids)))
    here = this_place()
    found: set[int] = set()
    out: set[int] = set()
    for row in session.execute(query):
        found.add(row.id)
        if row.beat_at < silent_since or (row.place == here
                                          and not is_running(row.pid, row.process_start)):
            out.add(row.id)
    if holder_ids is not None:
        out |= holder_ids - found  # a row deleted by a sweeper: its holder was gone
    return out


def reclaim(session: Session, sending: SendingSettings, *, edition_ids: list[int] | None = None,
            first_id: int | None = None, last_id: int | None = None,
            now: dt.datetime | None = None) -> dict[int, list[int]]:
    """Queue again the claims of holders that are gone (cancel them if the edition was
    cancelled), and claims stuck past their lease. Returns {edition: delivery ids queued}.

    ``edition_ids`` (or every edition under way) and an optional id range limit where it
    looks: the claims of a batch when it starts, or everything when the sweeper runs."""
    now = now or utcnow()
    if edition_ids is None:
        edition_ids = list(session.scalars(select(Edition.id).where(Edition.state.in_(
            [EditionState.sending, EditionState.paused, EditionState.cancelled]))))
    query = select(Delivery.id, Delivery.edition_id, Delivery.holder_id, Delivery.lease_until
                   ).where(Delivery.edition_id.in_(edition_ids), Delivery.state == D.sending)
    if first_id is not None and last_id is not None:
        query = query.where(Delivery.id.between(first_id, last_id))
    claims = session.execute(query).all() if edition_ids else []
    if not claims:
        return {}
    dead = gone(session, sending, {c.holder_id for c in claims if c.holder_id is not None}, now)
    stale = [c for c in claims
             if c.holder_id is None or c.holder_id in dead
             or (c.lease_until is not None and c.lease_until < now)]
    if not stale:
        return {}
    states = dict(session.execute(select(Edition.id, Edition.state).where(
        Edition.id.in_({c.edition_id for c in stale}))).all())
    queued: dict[int, list[int]] = defaultdict(list)
    for claim in stale:
        cancelled = states.get(claim.edition_id) == EditionState.cancelled
        to = D.cancelled if cancelled else D.queued
        done = session.execute(
            update(Delivery).where(Delivery.id == claim.id, Delivery.state == D.sending,
                                   _same_holder(claim.holder_id))
            .values(state=to, holder_id=None, lease_until=None, updated_at=now,
                    outcome="edition cancelled" if cancelled else "holder gone; queued again")
        ).rowcount  # type: ignore[attr-defined]
        if done and not cancelled:
            queued[claim.edition_id].append(claim.id)
    if queued:
        log.warning("queued again %d deliveries whose holder is gone",
                    sum(len(v) for v in queued.values()))
    return dict(queued)


def _same_holder(holder_id: int | None) -> Any:
    return Delivery.holder_id.is_(None) if holder_id is None else Delivery.holder_id == holder_id


def forget_gone(session: Session, sending: SendingSettings,
                now: dt.datetime | None = None) -> int:
    """Remove the rows of gone holders that hold no claim any more (after a reclaim)."""
    dead = gone(session, sending, None, now)
    if not dead:
        return 0
    holding = set(session.scalars(select(Delivery.holder_id).where(
        Delivery.holder_id.in_(sorted(dead)), Delivery.state == D.sending)))
    forgettable = sorted(dead - holding)
    if forgettable:
        session.execute(delete(SenderProcess).where(SenderProcess.id.in_(forgettable)))
    return len(forgettable)


def live_batches(session: Session, sending: SendingSettings,
                 now: dt.datetime | None = None) -> list[tuple[int, int, int]]:
    """(edition, first id, last id) of the batches live processes are working on now."""
    rows = session.execute(select(_process.c.id, _process.c.edition_id, _process.c.first_id,
                                  _process.c.last_id)
                           .where(_process.c.edition_id.is_not(None))).all()
    if not rows:
        return []
    dead = gone(session, sending, {r.id for r in rows}, now)
    return [(r.edition_id, r.first_id, r.last_id) for r in rows
            if r.id not in dead and r.first_id is not None and r.last_id is not None]


def processes(session: Session, sending: SendingSettings) -> list[dict[str, Any]]:
    """Every registered sender process and whether it is alive (for the ops views)."""
    now = utcnow()
    rows = session.execute(select(SenderProcess).order_by(SenderProcess.host,
                                                          SenderProcess.pid)).scalars().all()
    dead = gone(session, sending, {r.id for r in rows}, now) if rows else set()
    return [{"id": r.id, "host": r.host, "pid": r.pid, "alive": r.id not in dead,
             "seconds_since_beat": round((now - r.beat_at).total_seconds(), 1),
             "edition_id": r.edition_id} for r in rows]
