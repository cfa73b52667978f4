"""Starting, pausing, resuming, cancelling and watching the send of an edition.

Starting a send freezes the audience in one set-based statement: one delivery row per
confirmed, unsuppressed subscriber at that moment, unique on (edition, subscriber). From
then on the delivery rows are the truth; a Celery message only names an edition and a range
of delivery ids (a batch), and losing one (a Redis restart) loses nothing: the sweeper
queues the rows again.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Select,
    Table,
    Text,
    case,
    func,
    insert,
    literal,
    null,
    select,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, aliased

from mailer import tasks
from mailer.audit import record
from mailer.config import SendingSettings, Settings
from mailer.db import UTCDateTime, audience_lock, utcnow
from mailer.deliveries.models import FINAL_STATES, OPEN_STATES, Delivery, DeliveryState
from mailer.delivery.preflight import Check, audience_size, complaint_hold, nobody, preflight
from mailer.delivery.queries import state_counts
from mailer.editions import variants
from mailer.editions.errors import NotSendable
from mailer.editions.models import Edition, EditionState
from mailer.editions.states import EDITABLE, can_become, transition
from mailer.lists.models import Subscription
from mailer.subscribers.models import Subscriber
from mailer.subscribers.queries import mailable as _mailable  # who the freeze chooses

__all__ = [
    "Progress", "SendError", "VariantView", "acknowledge_complaints", "audience_size", "cancel",
    "complaint_hold", "enqueue_ids", "enqueue_pending", "finish_if_done", "pause",
    "progress", "publish_batches", "resume", "schedule_send", "send_test_copies",
    "start_due_editions", "start_send", "state_counts", "unschedule", "variant_overview",
]

D = DeliveryState


class SendError(Exception):
    """Why an edition cannot be sent (or paused, resumed…) now, in words staff understand."""


def _edition(session: Session, edition_id: int, *, lock: bool = False) -> Edition:
    query = select(Edition).where(Edition.id == edition_id)
    edition = session.scalars(query.with_for_update() if lock else query).first()
    if edition is None:
        raise SendError(f"there is no edition {edition_id}")
    return edition


def _freeze_audience(session: Session, edition: Edition, settings: Settings) -> int:
    """One delivery row per mailable reader, in one statement; safe to run twice.

    The first freeze of an edition (no rows yet; ``start_send`` holds the edition's row
    lock, so nobody else is freezing it) is a plain ``INSERT … SELECT`` in subscriber
    order: the unique (subscriber, edition) index still refuses a second row for a reader,
    but no row pays for an ``ON CONFLICT`` look-up it cannot need. A freeze of an edition
    that already has rows inserts only the readers it lacks.

    Topics (``mailer.editions.variants``): one grouped read of the audience's distinct topic
    sets first; when some set selects less than the whole edition, each distinct selection
    is composed once and the same one statement writes every reader's variant (or skips a
    reader whose topics have nothing in this edition), joined on a small table of what each
    topic set gets. Per reader nothing is looked at in Python."""
    audience_lock(session, exclusive=False)  # no subscriber deleted until this commits
    now = utcnow()
    plan = _variant_plan(session, edition, settings)
    if plan:
        return _freeze_with_variants(session, edition, plan, now)
    chosen = select(
        literal(edition.id), Subscriber.id, literal(D.queued.value), literal(0),
        literal(now, UTCDateTime()),
    ).where(_mailable(edition.list_id)).order_by(Subscriber.id)
    columns = ["edition_id", "subscriber_id", "state", "attempts", "updated_at"]
    return _insert_audience(session, edition, chosen, columns)


def _insert_audience(session: Session, edition: Edition, chosen: Select[*tuple[Any, ...]],
                     columns: list[str]) -> int:
    had_rows = session.scalar(
        select(Delivery.id).where(Delivery.edition_id == edition.id).limit(1)) is not None
    if not had_rows:
        inserted = cast(CursorResult[Any], session.execute(
            insert(Delivery).from_select(columns, chosen))).rowcount
        if inserted is not None and inserted >= 0:
            return int(inserted)  # no count over the rows just written
    else:
        dialect = session.get_bind().dialect.name
        make_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(make_insert(Delivery).from_select(columns, chosen)
                        .on_conflict_do_nothing(index_elements=["subscriber_id", "edition_id"]))
    return int(session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.edition_id == edition.id)
    ) or 0)


# --- topics: the variant each reader gets ------------------------------------------------


def _audience_by_topics(edition: Edition) -> Select[*tuple[Any, ...]]:
    """The mailable readers of the edition's list with their subscription's topics as
    text, what the freeze groups and joins by ('null': everything, whether the column is
    SQL NULL or JSON null). The subscription is joined under an alias of its own: the
    ``mailable`` test's EXISTS stays a test of its own table."""
    held = aliased(Subscription)
    topics = func.coalesce(cast_(held.topics, Text), "null")
    return select(Subscriber.id.label("subscriber_id"), topics.label("topics")).join(
        held, (held.subscriber_id == Subscriber.id) & (held.list_id == edition.list_id)
    ).where(_mailable(edition.list_id))


def _topic_groups(session: Session, edition: Edition) -> dict[str, int]:
    """How many mailable readers follow each distinct topic set (one grouped read)."""
    audience = _audience_by_topics(edition).subquery()
    return {str(key): int(n) for key, n in session.execute(
        select(audience.c.topics, func.count()).group_by(audience.c.topics))}


def _variant_plan(session: Session, edition: Edition, settings: Settings) -> dict[str, int]:
    """What each topic set of the audience gets (``variants.plan``), or {} when every
    reader gets the whole edition (a send as before topics: no variant, no join)."""
    groups = _topic_groups(session, edition)
    if set(groups) <= {"null"}:
        return {}
    planned = variants.plan(session, edition, settings, groups)
    if all(v == variants.WHOLE for v in planned.values()):
        return {}
    return {str(k): v for k, v in planned.items()}


def _freeze_with_variants(session: Session, edition: Edition, plan: dict[str, int],
                          now: dt.datetime) -> int:
    """The freeze's one ``INSERT … SELECT``, joined on a temporary table of (topic set, what
    it gets): the variant's number, NULL for the whole edition, or skipped with its reason.
    A topic set that appeared since the plan was made (a reader changed theirs meanwhile)
    has no row there and gets the whole edition."""
    table = Table("freeze_variant_plan", MetaData(), Column("topics", Text, primary_key=True),
                  Column("variant", Integer), prefixes=["TEMPORARY"],
                  postgresql_on_commit="DROP")
    connection = session.connection()
    # Created and dropped in the freeze's transaction: a failure rolls its creation back
    # with everything else (a DROP in an aborted PostgreSQL transaction would hide the error).
    table.drop(connection, checkfirst=True)
    table.create(connection)
    session.execute(insert(table), [{"topics": k, "variant": v} for k, v in plan.items()])
    audience = _audience_by_topics(edition).subquery()
    got = func.coalesce(table.c.variant, variants.WHOLE)
    nothing = got == variants.NOTHING
    chosen = select(
        literal(edition.id), audience.c.subscriber_id,
        case((nothing, literal(D.skipped.value)), else_=literal(D.queued.value)),
        literal(0), literal(now, UTCDateTime()),
        case((nothing, literal(variants.SKIPPED_OUTCOME)), else_=null()),
        case((got > 0, got), else_=null()),
    ).select_from(audience.outerjoin(table, table.c.topics == audience.c.topics)
                  ).order_by(audience.c.subscriber_id)
    columns = ["edition_id", "subscriber_id", "state", "attempts", "updated_at", "outcome",
               "variant"]
    audience_count = _insert_audience(session, edition, chosen, columns)
    table.drop(connection)
    _count_variant_readers(session, edition)
    return audience_count


def _count_variant_readers(session: Session, edition: Edition) -> None:
    """Each variant's readers as frozen, and the whole edition's and the skipped ones in
    ``edition.stats["topics"]`` (the preview's figures)."""
    counts: dict[int | None, int] = {}
    skipped = 0
    for variant, state, n in session.execute(
            select(Delivery.variant, Delivery.state, func.count())
            .where(Delivery.edition_id == edition.id)
            .group_by(Delivery.variant, Delivery.state)):
        if state == D.skipped:
            skipped += int(n)
        else:
            counts[variant] = counts.get(variant, 0) + int(n)
    for row in variants.variants_of(session, edition.id):
        row.readers = counts.get(row.number, 0)
    edition.stats = {**(edition.stats or {}), "topics": {
        "whole": counts.get(None, 0), "nothing_in_topics": skipped}}


def _anything_queued(session: Session, edition: Edition) -> bool:
    return session.scalar(select(Delivery.id).where(
        Delivery.edition_id == edition.id, Delivery.state == D.queued).limit(1)) is not None


def start_send(session: Session, edition_id: int, *, by: str, settings: Settings) -> int:
    """Freeze the snapshot and the audience, and queue the batches. Returns the audience.
    ``settings``: the edition is composed (identity, editions, base_url) and batched
    (``sending``) with them.

    The checks are :func:`preflight`'s (the first problem is the refusal), the audience is
    the rows frozen. Safe to run twice: a second call on an edition already sending
    changes nothing.
    """
    from mailer.editions import snapshot

    edition = _edition(session, edition_id, lock=True)
    if edition.state in EDITABLE:
        try:  # composed once: what preflight checks is then the frozen snapshot
            snapshot.freeze(session, edition, settings)
        except NotSendable as exc:
            raise SendError(str(exc)) from exc
    checked = preflight(session, edition, settings=settings, count_audience=False)
    if checked.started:
        return edition.audience_count
    if not checked.ok:
        raise SendError(str(checked.first()))
    audience = _freeze_audience(session, edition, settings)
    if audience == 0:
        raise SendError(str(nobody()))
    if not _anything_queued(session, edition):
        raise SendError("No reader's topics have anything in this edition: it would go to "
                        "nobody. Add articles of their topics, or set the list to send "
                        "such readers the whole edition.")
    edition.audience_count = audience
    transition(session, edition, EditionState.sending, reason=f"started by {by}")
    _record(session, by, "edition.send", edition, {"audience": audience})
    enqueue_pending(session, edition.id, sending=settings.sending)
    return audience


def schedule_send(session: Session, edition_id: int, at: dt.datetime, *, by: str,
                  settings: Settings) -> None:
    edition = _edition(session, edition_id, lock=True)
    if at.tzinfo is None:
        raise SendError("the time needs a time zone")
    if at <= utcnow():
        raise SendError("that time is in the past")
    checked = preflight(session, edition, settings=settings, count_audience=False)
    content = [p for p in checked.problems if p.check == Check.content]
    if content:
        raise SendError(str(content[0]))
    if edition.state == EditionState.draft:
        transition(session, edition, EditionState.scheduled, reason=f"scheduled by {by}")
    elif edition.state != EditionState.scheduled:
        raise SendError(f"edition {edition.id} is {edition.state}; it cannot be scheduled")
    edition.scheduled_at = at
    _record(session, by, "edition.schedule", edition, {"at": at.isoformat()})


def unschedule(session: Session, edition_id: int, *, by: str) -> None:
    edition = _edition(session, edition_id, lock=True)
    transition(session, edition, EditionState.draft, reason=f"unscheduled by {by}")
    edition.scheduled_at = None
    _record(session, by, "edition.unschedule", edition, {})


def start_due_editions(session: Session, *, settings: Settings) -> list[int]:
    """Start the scheduled editions whose time has come (beat's sweep calls this)."""
    due = session.scalars(
        select(Edition.id).where(Edition.state == EditionState.scheduled,
                                 Edition.scheduled_at <= utcnow())
    ).all()
    started = []
    for edition_id in due:
        try:
            with session.begin_nested():
                start_send(session, edition_id, by="schedule", settings=settings)
            started.append(edition_id)
        except SendError as exc:
            edition = _edition(session, edition_id)
            edition.state_reason = f"scheduled send could not start: {exc}"
    return started


def pause(session: Session, edition_id: int, *, by: str, reason: str = "") -> None:
    edition = _edition(session, edition_id, lock=True)
    if not can_become(edition.state, EditionState.paused):
        raise SendError(f"edition {edition.id} is {edition.state}; only a sending edition pauses")
    transition(session, edition, EditionState.paused, reason=reason or f"paused by {by}")
    _record(session, by, "edition.pause", edition, {"reason": reason})


def resume(session: Session, edition_id: int, *, by: str, sending: SendingSettings) -> None:
    edition = _edition(session, edition_id, lock=True)
    if edition.state != EditionState.paused:
        raise SendError(f"edition {edition.id} is {edition.state}; only a paused edition resumes")
    hold = complaint_hold(session, sending=sending)
    if hold:
        raise SendError(hold)
    transition(session, edition, EditionState.sending, reason=f"resumed by {by}")
    _record(session, by, "edition.resume", edition, {})
    enqueue_pending(session, edition.id, sending=sending)


def cancel(session: Session, edition_id: int, *, by: str) -> int:
    """Cancel: what has not gone out yet never will. Returns how many were cancelled."""
    edition = _edition(session, edition_id, lock=True)
    if not can_become(edition.state, EditionState.cancelled):
        raise SendError(f"edition {edition.id} is {edition.state}; it cannot be cancelled")
    transition(session, edition, EditionState.cancelled, reason=f"cancelled by {by}")
    cancelled = cast(CursorResult[Any], session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition.id, Delivery.state.in_([D.queued, D.deferred]))
        .values(state=D.cancelled, outcome="edition cancelled", updated_at=utcnow())
    )).rowcount
    _record(session, by, "edition.cancel", edition, {"cancelled": cancelled})
    return int(cancelled or 0)


def finish_if_done(session: Session, edition_id: int) -> bool:
    """Mark the edition sent once every delivery is final and the counts add up.

    Called after every batch, so it must not grow with the list: one indexed look-up per
    open state (from the top of the id range, where a send still in progress has its queued
    rows) answers "is anything still open"; the deliveries are counted once, at the end."""
    edition = session.get(Edition, edition_id)
    if edition is None or edition.state != EditionState.sending:
        return False
    for state in OPEN_STATES:
        if session.scalar(select(Delivery.id).where(
                Delivery.edition_id == edition_id, Delivery.state == state)
                .order_by(Delivery.id.desc()).limit(1)) is not None:
            return False
    counts = state_counts(session, edition_id)
    if sum(counts.values()) != edition.audience_count:
        return False
    edition.stats = {**(edition.stats or {}), "deliveries": counts}
    finished = transition(session, edition, EditionState.sent, reason="every delivery is final",
                          allow_same=True)
    if finished:  # its figures summed once, and the editors told how it went (insight)
        tasks.publish(tasks.REPORT_EDITION, edition_id, session=session)
    return finished


# --- complaints (the check itself is preflight.complaint_hold) ----------------------------


def acknowledge_complaints(session: Session, edition_id: int, *, by: str) -> int:
    """An operator has looked at the complaints of an edition: sending may go on."""
    from mailer.bounces.models import BounceClass
    from mailer.bounces.rates import class_counts

    edition = _edition(session, edition_id, lock=True)
    complaints = class_counts(session, edition_id).get(BounceClass.complaint, 0)
    edition.stats = {**(edition.stats or {}), "complaints_acknowledged": complaints,
                     "complaints_acknowledged_by": by}
    _record(session, by, "edition.acknowledge_complaints", edition, {"complaints": complaints})
    return complaints


# --- queueing ---------------------------------------------------------------------------------


def publish_batches(session: Session, edition_id: int,
                    ranges: Sequence[tuple[int, int]]) -> int:
    """Queue one batch task per (first id, last id), once the current transaction commits."""
    return tasks.publish_many(tasks.SEND_BATCH, [(edition_id, first_id, last_id)
                                                 for first_id, last_id in ranges],
                              session=session)


def enqueue_ids(session: Session, edition_id: int, ids: Sequence[int], batch_size: int) -> int:
    """Queue these delivery ids in batches of ``batch_size`` (a batch names a range: a row
    in it that is not queued any more is passed over). Returns how many ids."""
    size = batch_size
    ids = sorted(set(ids))
    ranges = [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]
    publish_batches(session, edition_id, ranges)
    return len(ids)


def enqueue_pending(session: Session, edition_id: int, *, sending: SendingSettings) -> int:
    """Queue every delivery of the edition that is waiting (deferred ones when due), in
    batches of ``sending.batch_size`` consecutive ids, computed by the database without reading
    every id into Python. Returns how many batches."""
    now = utcnow()
    session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.state == D.deferred,
               Delivery.next_attempt_at <= now)
        .values(state=D.queued, updated_at=now)
    )
    size = sending.batch_size
    numbered = select(
        Delivery.id.label("id"),
        ((func.row_number().over(order_by=Delivery.id) - 1) // size).label("batch"),
    ).where(Delivery.edition_id == edition_id, Delivery.state == D.queued).subquery()
    ranges = session.execute(
        select(func.min(numbered.c.id), func.max(numbered.c.id))
        .group_by(numbered.c.batch).order_by(func.min(numbered.c.id))
    ).all()
    return publish_batches(session, edition_id, [(int(a), int(b)) for a, b in ranges])


# --- topics: the preview's variants -----------------------------------------------------


@dataclass(frozen=True)
class VariantView:
    """One variant as the preview shows it (``number``: None for the whole edition, and
    ``variants.NOTHING`` for the readers whose topics have nothing in it)."""

    number: int | None
    article_ids: tuple[int, ...]
    titles: list[str]
    readers: int


def variant_overview(session: Session, edition: Edition) -> list[VariantView]:
    """The edition's variants and how many readers each reaches: as frozen once the send
    has started, else as a send started now would freeze them (numbered the same way)."""
    titles = {link.article_id: link.article.title for link in edition.articles}
    everything = tuple(titles)
    topics = (edition.stats or {}).get("topics") if edition.audience_count else None
    if edition.state not in EDITABLE:
        whole = int(topics["whole"]) if topics else edition.audience_count
        skipped = int(topics["nothing_in_topics"]) if topics else 0
        rows = [(v.number, tuple(v.article_ids), v.readers)
                for v in variants.variants_of(session, edition.id)]
    else:
        groups = _topic_groups(session, edition)
        subset_of = variants.assign(session, edition, groups) if set(groups) - {"null"} else {}
        readers: dict[tuple[int, ...], int] = {}
        for key, n in groups.items():
            subset = subset_of.get(key, everything)
            readers[subset] = readers.get(subset, 0) + n
        whole, skipped = readers.get(everything, 0), readers.get((), 0)
        rows = [(i, s, readers[s]) for i, s in enumerate(
            variants.partial_subsets(edition, readers), start=1)]
    views = [VariantView(None, everything, list(titles.values()), whole)]
    views += [VariantView(n, ids, [titles.get(i, f"article {i}") for i in ids], count)
              for n, ids, count in rows]
    if skipped:
        views.append(VariantView(variants.NOTHING, (), [], skipped))
    return views


# --- watching -----------------------------------------------------------------------------------


@dataclass
class Progress:
    edition_id: int
    state: str
    reason: str
    audience: int
    counts: dict[str, int] = field(default_factory=dict)
    rate_per_second: float = 0.0
    eta_seconds: float | None = None

    @property
    def done(self) -> int:
        return sum(n for s, n in self.counts.items() if s in FINAL_STATES)

    @property
    def remaining(self) -> int:
        return max(0, self.audience - self.done)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.audience if self.audience else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "edition_id": self.edition_id, "state": self.state, "reason": self.reason,
            "audience": self.audience, "counts": self.counts, "done": self.done,
            "remaining": self.remaining, "percent": round(self.percent, 2),
            "rate_per_second": round(self.rate_per_second, 1),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
        }


def progress(session: Session, edition_id: int, *, window_seconds: int = 10) -> Progress:
    """Counts per state, the recent rate and the time left at that rate.

    The rate is what was sent in the last ``window_seconds``, divided by the time that
    window really covers: a send that started 3 s ago is not averaged over 10."""
    edition = _edition(session, edition_id)
    counts = {s.value: 0 for s in DeliveryState} | state_counts(session, edition_id)
    now = utcnow()
    since = now - dt.timedelta(seconds=window_seconds)
    if edition.started_at is not None and edition.started_at > since:
        since = edition.started_at
    recent = int(session.scalar(
        select(func.count()).select_from(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.state == D.sent,
               Delivery.sent_at >= since)
    ) or 0)
    covered = max(1.0, (now - since).total_seconds())
    rate = recent / covered
    result = Progress(edition.id, edition.state, edition.state_reason, edition.audience_count,
                      counts, rate)
    if rate > 0 and edition.state == EditionState.sending:
        result.eta_seconds = result.remaining / rate
    return result


def _record(session: Session, actor: str, action: str, edition: Edition,
            detail: dict[str, object]) -> None:
    """The audit log's entry of a staff action, in the action's own transaction."""
    record(session, actor=actor, action=action, target=f"edition:{edition.id}", detail=detail)


# --- test copies ----------------------------------------------------------------------------

#: Test copies go over this process's one SMTP connection (which is not thread-safe), one
#: staff action at a time, whichever asked: the admin's or the API's.
_test_copies = threading.Lock()


def send_test_copies(
    edition_id: int, addresses: Sequence[str], *, by: str, settings: Settings
) -> list[tuple[str, str]]:
    """Send a marked copy ("[TEST]" in the subject) to each address, as a reader would get
    it, built and carried with ``settings`` (identity, smtp, base_url). Not counted: no
    delivery rows, no audience. Returns (address, result) pairs."""
    import secrets

    from mailer.counters import timed
    from mailer.db import transaction
    from mailer.delivery.assembly import MessageAssembler, Reader
    from mailer.editions import snapshot
    from mailer.emails.kinds import MessageKind
    from mailer.emails.transport import SMTPFailure, process_transport
    from mailer.subscribers.addresses import InvalidAddress, normalise
    from mailer.subscribers.unsubscribe import public_id_of_test_copy

    with transaction() as session:
        edition = _edition(session, edition_id)
        personaliser, subject = snapshot.as_mailed(edition, settings, check=True)
        assembler = MessageAssembler(edition_id=edition.id, subject=f"[TEST] {subject}",
                                     personaliser=personaliser,
                                     view_url=snapshot.view_url(edition, settings.base_url),
                                     base_url=settings.base_url,
                                     identity=snapshot.list_settings(edition,
                                                                     settings).identity,
                                     keys=settings.all_secrets, smtp=settings.smtp,
                                     kind=MessageKind.test)
        _record(session, by, "edition.test", edition, {"to": list(addresses)})
    results: list[tuple[str, str]] = []
    # Built by the edition's assembler, as a reader's copy is; counted under its kind.
    with _test_copies:
        transport = timed(process_transport(settings.smtp), MessageKind.test)
        for address in addresses:
            try:
                email, _ = normalise(address)
            except InvalidAddress as exc:
                results.append((address, f"not sent: {exc}"))
                continue
            # A test copy's unsubscribe link names nobody: its page says it was a test copy.
            reader = Reader(delivery_id=secrets.randbelow(2**31), email=email, first_name="",
                            public_id=public_id_of_test_copy(edition_id))
            try:
                accepted = transport.send(assembler.envelope_from(reader), email,
                                          assembler.build(reader))
                results.append((address, f"sent: {accepted.code} {accepted.reply}"))
            except SMTPFailure as failure:
                results.append((address, f"not sent: {failure}"))
    return results
