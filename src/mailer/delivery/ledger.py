"""The database side of a batch: claim deliveries in groups, record outcomes in groups.

One SQLAlchemy connection per batch; each group is one transaction that records the
outcomes of the messages sent since the last commit, reads the edition's state, and claims
the next group. The statements are plain SQL strings written once per dialect and run with
``exec_driver_sql``: no per-call compilation, and psycopg prepares each on the server after
its first few runs. A whole group's outcomes go in one UPDATE (arrays on PostgreSQL).

Every statement that changes a claim checks that it is still ``sending`` *and still held by
this process*: once a holder is declared gone and its claims are queued again, nothing it
writes afterwards can touch them.

The deliveries a receiving server deferred are counted per edition, minute and domain
(``edition_deferral``) by the statement, or in the transaction, that records them: a delivery
row keeps only how often it was tried, and insight shows the deferrals over time.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from mailer.backoff import Backoff
from mailer.bounces.actions import record_bounce
from mailer.bounces.models import BounceClass
from mailer.config import BounceSettings, SendingSettings
from mailer.db import get_engine, run_after_commit, take_after_commit
from mailer.deliveries.models import DeliveryState
from mailer.delivery.assembly import Reader
from mailer.subscribers.queries import MAILABLE_SQL

D = DeliveryState
LEFT = "left the list during the send"


@dataclass
class Outcome:
    delivery_id: int
    state: DeliveryState
    code: int | None
    reply: str
    attempts: int
    label: str  # for the operators: sent, deferred, hard bounce, policy, retries exhausted
    at: dt.datetime
    bounce: BounceClass | None = None
    status: str = ""
    recipient: str = ""


@dataclass(frozen=True)
class Claimed:
    reader: Reader
    attempts: int  # including this one


class ClaimsLost(Exception):
    """This process's claims were queued again by someone else (it was declared gone)."""


# --- the statements ---------------------------------------------------------------------------

#: The next group of a batch: queued rows of the edition in (after, last], in id order,
#: with the reader and whether they may still be mailed (confirmed, not suppressed).
#: PostgreSQL skips rows another process has locked (it is claiming them right now).
#: (MAILABLE_SQL is a constant, written beside mailable(); _GROUP below embeds it too.)
_PICK_COLUMNS = (
    "SELECT d.id, d.attempts, s.email, s.first_name, s.public_id, d.variant, "  # noqa: S608
    f"CASE WHEN {MAILABLE_SQL} THEN 1 ELSE 0 END AS mailable "
    "FROM delivery d LEFT JOIN subscriber s ON s.id = d.subscriber_id "
)

#: PostgreSQL: a group's outcomes (``v``) recorded where the claim is still this process's
#: (``recorded``), and the deferrals among them counted per minute of their answer and the
#: reader's domain, in the same statement: only a row this statement really records is
#: counted, so a group recorded twice, or refused because its claims were taken back,
#: counts nothing more. A deferral is a server's temporary refusal, a 4xx reply, whatever
#: the row became: the last one of a delivery whose attempts ran out is one too (it is
#: ``failed``), and a 5xx we try again is not; a connection that failed under a message
#: (no reply) was our trouble, not the domain's. The domain
#: is worked out as ``mailer.insight.buckets`` does (insight's "(erased readers)" when the
#: reader is gone).
_RECORD = (
    "v AS (SELECT * FROM unnest(%(ids)s::bigint[], %(states)s::text[], "
    "%(codes)s::int[], %(replies)s::text[], %(outcomes)s::text[], %(ats)s::timestamptz[], "
    "%(next_ats)s::timestamptz[]) AS v(id, state, code, reply, outcome, at, next_at)), "
    "recorded AS (UPDATE delivery AS d SET state = v.state, smtp_code = v.code, "
    "smtp_reply = v.reply, outcome = v.outcome, updated_at = %(now)s, "
    "sent_at = CASE WHEN v.state = 'sent' THEN v.at END, next_attempt_at = v.next_at, "
    "holder_id = NULL, lease_until = NULL FROM v "
    "WHERE d.id = v.id AND d.state = 'sending' AND d.holder_id = %(holder)s "
    "RETURNING d.id, d.subscriber_id), "
    "deferrals AS (INSERT INTO edition_deferral (edition_id, minute, domain, deferrals) "
    "SELECT %(edition)s::int, date_trunc('minute', v.at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', "
    "coalesce(lower(split_part(s.email, '@', 2)), '(erased readers)'), count(*) "
    "FROM recorded r JOIN v ON v.id = r.id LEFT JOIN subscriber s ON s.id = r.subscriber_id "
    "WHERE v.code BETWEEN 400 AND 499 "
    "GROUP BY 2, 3 ORDER BY 2, 3 "  # one order of the rows' locks for every batch
    "ON CONFLICT (edition_id, minute, domain) "
    "DO UPDATE SET deferrals = edition_deferral.deferrals + excluded.deferrals)"
)

_STATEMENTS: dict[str, dict[str, str]] = {
    "postgresql": {
        "pick": _PICK_COLUMNS + (
            "WHERE d.edition_id = %(edition)s AND d.state = 'queued' AND d.id > %(after)s "
            "AND d.id <= %(last)s ORDER BY d.id LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED"),
        "claim": ("UPDATE delivery SET state = 'sending', attempts = attempts + 1, "
                  "holder_id = %(holder)s, lease_until = %(lease)s, updated_at = %(now)s "
                  "WHERE id = ANY(%(ids)s) AND state = 'queued'"),
        "skip": ("UPDATE delivery SET state = 'skipped', outcome = %(outcome)s, "
                 "updated_at = %(now)s WHERE id = ANY(%(ids)s) AND state = 'queued'"),
        "record": f"WITH {_RECORD} SELECT id FROM recorded",  # noqa: S608
        "release": ("UPDATE delivery SET state = %(to)s, attempts = attempts - 1, "
                    "holder_id = NULL, lease_until = NULL, next_attempt_at = %(next_at)s, "
                    "outcome = %(outcome)s, updated_at = %(now)s "
                    "WHERE id = ANY(%(ids)s) AND state = 'sending' AND holder_id = %(holder)s"),
        "defer_rest": ("UPDATE delivery SET state = 'deferred', next_attempt_at = %(next_at)s, "
                       "outcome = %(outcome)s, updated_at = %(now)s "
                       "WHERE edition_id = %(edition)s AND state = 'queued' "
                       "AND id > %(after)s AND id <= %(last)s"),
        "edition_state": "SELECT state FROM edition WHERE id = %(edition)s",
    },
    "sqlite": {
        # SQLite has one writer at a time (BEGIN IMMEDIATE): no row can be claimed twice.
        "pick": _PICK_COLUMNS + (
            "WHERE d.edition_id = :edition AND d.state = 'queued' AND d.id > :after "
            "AND d.id <= :last ORDER BY d.id LIMIT :limit"),
        "claim": ("UPDATE delivery SET state = 'sending', attempts = attempts + 1, "
                  "holder_id = :holder, lease_until = :lease, updated_at = :now "
                  "WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'queued'"),
        "skip": ("UPDATE delivery SET state = 'skipped', outcome = :outcome, updated_at = :now "
                 "WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'queued'"),
        "record": (
            "UPDATE delivery SET state = :state, smtp_code = :code, smtp_reply = :reply, "
            "outcome = :outcome, updated_at = :now, sent_at = :sent_at, "
            "next_attempt_at = :next_at, holder_id = NULL, lease_until = NULL "
            "WHERE id = :id AND state = 'sending' AND holder_id = :holder"),
        # Run per deferral once every outcome of the group is recorded (the same transaction).
        "count_deferral": (
            "INSERT INTO edition_deferral (edition_id, minute, domain, deferrals) "
            "SELECT :edition, :minute, "
            "coalesce(lower(substr(s.email, instr(s.email, '@') + 1)), '(erased readers)'), 1 "
            "FROM delivery d LEFT JOIN subscriber s ON s.id = d.subscriber_id WHERE d.id = :id "
            "ON CONFLICT (edition_id, minute, domain) DO UPDATE SET deferrals = deferrals + 1"),
        "release": ("UPDATE delivery SET state = :to, attempts = attempts - 1, "
                    "holder_id = NULL, lease_until = NULL, next_attempt_at = :next_at, "
                    "outcome = :outcome, updated_at = :now "
                    "WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'sending' "
                    "AND holder_id = :holder"),
        "defer_rest": ("UPDATE delivery SET state = 'deferred', next_attempt_at = :next_at, "
                       "outcome = :outcome, updated_at = :now "
                       "WHERE edition_id = :edition AND state = 'queued' "
                       "AND id > :after AND id <= :last"),
        "edition_state": "SELECT state FROM edition WHERE id = :edition",
    },
}


#: PostgreSQL: a whole group in one statement, run as its own transaction (autocommit):
#: record the outcomes, read the edition's state and, while it is sending, claim the next
#: rows (those whose reader left are skipped); the deferrals are counted (``_RECORD``).
#: One round trip instead of six (BEGIN, record, state, pick, claim, COMMIT). All or
#: nothing: when an outcome's claim is no longer this process's, the last column fails the
#: statement (a cast error naming "claims lost") and nothing of it is applied, its
#: deferrals neither, as when the old transaction rolled back.
_GROUP = (
    f"WITH {_RECORD}, "  # noqa: S608
    "ed AS (SELECT state FROM edition WHERE id = %(edition)s), "
    "picked AS (SELECT d.id, d.attempts, s.email, s.first_name, s.public_id, d.variant, "
    f"({MAILABLE_SQL}) IS TRUE AS mailable "
    "FROM delivery d LEFT JOIN subscriber s ON s.id = d.subscriber_id "
    "WHERE %(claim)s AND EXISTS (SELECT 1 FROM ed WHERE ed.state = 'sending') "
    "AND d.edition_id = %(edition)s AND d.state = 'queued' AND d.id > %(after)s "
    "AND d.id <= %(last)s ORDER BY d.id LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED), "
    "claimed AS (UPDATE delivery AS d SET state = 'sending', attempts = d.attempts + 1, "
    "holder_id = %(holder)s, lease_until = %(lease)s, updated_at = %(now)s FROM picked p "
    "WHERE d.id = p.id AND p.mailable AND d.state = 'queued' RETURNING d.id), "
    "skipped AS (UPDATE delivery AS d SET state = 'skipped', outcome = %(left)s, "
    "updated_at = %(now)s FROM picked p "
    "WHERE d.id = p.id AND NOT p.mailable AND d.state = 'queued' RETURNING d.id) "
    "SELECT (SELECT state FROM ed), (SELECT count(*) FROM skipped), "
    "(SELECT max(id) FROM picked), "
    "(SELECT json_agg(json_build_array(p.id, p.attempts, p.email, p.first_name, p.public_id, "
    "p.variant) "
    "ORDER BY p.id) FROM picked p JOIN claimed c ON c.id = p.id), "
    "CASE WHEN (SELECT count(*) FROM recorded) < %(expected)s "
    "THEN CAST('claims lost: ' || (SELECT count(*) FROM recorded) AS int) END"
)


def _sqlite_time(value: dt.datetime | None) -> str | None:
    """How SQLAlchemy's UTCDateTime stores a time on SQLite (naive UTC, microseconds)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def backoff(attempts: int, sending: SendingSettings) -> dt.timedelta:
    """The wait before the next attempt of a delivery tried ``attempts`` times."""
    rule = Backoff(base=sending.retry_base_seconds, cap=sending.retry_max_seconds)
    return dt.timedelta(seconds=rule.seconds(attempts - 1))


class Ledger:
    def __init__(self, edition_id: int, holder_id: int, sending: SendingSettings,
                 bounces: BounceSettings) -> None:
        self.edition_id = edition_id
        self.sending = sending
        self.bounces = bounces  # the refusals of our own SMTP transactions are bounces too
        self.holder = holder_id
        self.conn: Connection = get_engine().connect()
        self.dialect = self.conn.dialect.name
        self.pg = self.dialect == "postgresql"
        self.sql = _STATEMENTS["postgresql" if self.pg else "sqlite"]
        self.lease = dt.timedelta(seconds=sending.lease_seconds)

    def close(self) -> None:
        self.conn.close()

    # --- helpers ------------------------------------------------------------------------
    def _time(self, value: dt.datetime | None) -> Any:
        return value if self.pg else _sqlite_time(value)

    def _ids(self, ids: Sequence[int]) -> Any:
        return list(ids) if self.pg else json.dumps(list(ids))

    def _run(self, name: str, params: dict[str, Any] | list[dict[str, Any]]) -> Any:
        return self.conn.exec_driver_sql(self.sql[name], params)  # type: ignore[arg-type]

    # --- one group ------------------------------------------------------------------------
    def commit_group(self, outcomes: list[Outcome], *, claim_after: int | None, last_id: int,
                     limit: int, now: dt.datetime) -> tuple[str, tuple[list[Claimed], int], int]:
        """Record ``outcomes``, read the edition's state and, while it is sending and
        ``claim_after`` is given, claim up to ``limit`` queued deliveries in
        (claim_after, last_id]. One transaction. Returns (the edition's state, (the claims,
        the highest id looked at), how many were skipped: the reader left).

        Raises ClaimsLost when some outcome's claim is no longer this process's."""
        if self.pg and not any(o.bounce is not None for o in outcomes) and self._idle():
            return self._group_in_one(outcomes, claim_after=claim_after, last_id=last_id,
                                      limit=limit, now=now)
        callbacks: list[Callable[[], object]] = []
        with self.conn.begin():
            if outcomes:
                callbacks = self._record(outcomes, now)
            state = str(self._run("edition_state", {"edition": self.edition_id}).scalar())
            claimed: list[Claimed] = []
            reached, skipped = claim_after or 0, 0
            if claim_after is not None and state == "sending":
                claimed, reached, skipped = self._claim(claim_after, last_id, limit, now)
        run_after_commit(callbacks)  # e.g. the operators' alert of a policy bounce
        return state, (claimed, reached), skipped

    def _group_in_one(self, outcomes: list[Outcome], *, claim_after: int | None, last_id: int,
                      limit: int, now: dt.datetime
                      ) -> tuple[str, tuple[list[Claimed], int], int]:
        """:meth:`commit_group` as one autocommitted statement (PostgreSQL, no bounces to
        record): see ``_GROUP``."""
        import psycopg

        raw = self.conn.connection.driver_connection
        assert raw is not None
        params: dict[str, Any] = {
            "now": now, "holder": self.holder, "edition": self.edition_id,
            **_columns(outcomes, self.sending),
            "expected": len(outcomes), "claim": claim_after is not None,
            "after": claim_after or 0, "last": last_id, "limit": limit,
            "lease": now + self.lease, "left": LEFT,
        }
        claimed: list[Claimed] = []
        reached, skipped = claim_after or 0, 0
        raw.autocommit = True  # the statement is the transaction
        try:
            while True:
                try:
                    state, left, top, rows, _ = raw.execute(_GROUP, params).fetchone()
                except psycopg.errors.InvalidTextRepresentation as exc:
                    if "claims lost" not in str(exc):
                        raise
                    recorded = int(str(exc).split("claims lost: ", 1)[1].split('"')[0])
                    raise ClaimsLost(f"{len(outcomes) - recorded} of {len(outcomes)} claims "
                                     "were queued again by someone else") from None
                skipped += int(left or 0)
                if top is not None:
                    reached = int(top)
                claimed = [Claimed(Reader(int(i), email, first or "", public, variant or 0),
                                   int(n) + 1)
                           for i, n, email, first, public, variant in rows or []]
                # Only readers who left among the rows picked: pick the next ones.
                if claimed or top is None or claim_after is None or state != "sending":
                    return str(state), (claimed, reached), skipped
                params.update(ids=[], states=[], codes=[], replies=[], outcomes=[], ats=[],
                              next_ats=[], expected=0, after=reached)
        finally:
            try:
                raw.autocommit = False
            except psycopg.Error:  # a broken connection: never back into the pool
                self.conn.invalidate()

    def _idle(self) -> bool:
        """No transaction open on the driver's connection (it may switch to autocommit)."""
        import psycopg

        raw = self.conn.connection.driver_connection
        return raw is not None and \
            raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    def _claim(self, after: int, last_id: int, limit: int,
               now: dt.datetime) -> tuple[list[Claimed], int, int]:
        """Claim up to ``limit`` mailable rows after ``after``; readers who left on the way
        are skipped. Returns (the claims, the highest id looked at, how many skipped)."""
        skipped = 0
        when = self._time(now)
        while True:
            rows = self._run("pick", {"edition": self.edition_id, "after": after,
                                      "last": last_id, "limit": limit}).all()
            if not rows:
                return [], after, skipped
            after = rows[-1].id
            left = [r.id for r in rows if not r.mailable]
            if left:
                self._run("skip", {"ids": self._ids(left), "now": when, "outcome": LEFT})
                skipped += len(left)
            mailable = [r for r in rows if r.mailable]
            if mailable:
                self._run("claim", {"ids": self._ids([r.id for r in mailable]), "now": when,
                                    "holder": self.holder,
                                    "lease": self._time(now + self.lease)})
                return ([Claimed(Reader(r.id, r.email, r.first_name or "", r.public_id,
                                        r.variant or 0), r.attempts + 1)
                         for r in mailable], after, skipped)

    def _record(self, outcomes: list[Outcome], now: dt.datetime) -> list[Callable[[], object]]:
        if self.pg:
            recorded = {row[0] for row in self._run("record", {
                "now": now, "holder": self.holder, "edition": self.edition_id,
                **_columns(outcomes, self.sending),
            })}
            lost = len(recorded) < len(outcomes)
        else:
            found = self._run("record", [{
                "now": _sqlite_time(now), "holder": self.holder, "id": o.delivery_id,
                "state": o.state.value, "code": o.code, "reply": o.reply[:2000],
                "outcome": o.label[:32],
                "sent_at": _sqlite_time(o.at) if o.state == D.sent else None,
                "next_at": _sqlite_time(_next_attempt(o, self.sending)),
            } for o in outcomes]).rowcount
            lost = found < len(outcomes)
            recorded = {o.delivery_id for o in outcomes} if not lost else set()
        if lost:  # the transaction rolls back: nothing of the group, nor its deferrals
            raise ClaimsLost(f"{len(outcomes) - len(recorded)} of {len(outcomes)} claims were "
                             "queued again by someone else")
        deferred = [o for o in outcomes if o.code is not None and 400 <= o.code <= 499]
        if deferred and not self.pg:
            self._run("count_deferral", [{
                "edition": self.edition_id, "id": o.delivery_id,
                "minute": _sqlite_time(o.at.replace(second=0, microsecond=0)),
            } for o in deferred])
        refused = [o for o in outcomes if o.bounce is not None and o.delivery_id in recorded]
        if not refused:
            return []
        with Session(bind=self.conn) as session:  # the same transaction
            for o in refused:
                assert o.bounce is not None
                record_bounce(
                    session, bounces=self.bounces, bounce_class=o.bounce, source="smtp",
                    recipient=o.recipient,
                    status_code=o.status or (str(o.code) if o.code else ""),
                    diagnostic=o.reply, delivery_id=o.delivery_id, edition_id=self.edition_id,
                    attribution="smtp", attribution_note="rejected during our own SMTP transaction",
                    fingerprint=f"smtp:{o.delivery_id}:{o.attempts}",
                )
            session.flush()
            return take_after_commit(session)

    # --- giving claims back -----------------------------------------------------------------
    def release(self, ids: Sequence[int], *, to: DeliveryState, now: dt.datetime,
                next_at: dt.datetime | None = None, outcome: str | None = None) -> None:
        """Give back claims this process did not attempt (paused, cancelled, SMTP down).

        Not counted as deferrals (``edition_deferral``) even when they go back as
        ``deferred``: no receiving server was asked, our own connection was the trouble."""
        if not ids:
            return
        with self.conn.begin():
            self._run("release", {"ids": self._ids(ids), "to": to.value, "holder": self.holder,
                                  "now": self._time(now), "next_at": self._time(next_at),
                                  "outcome": outcome})

    def defer_rest(self, after: int, last_id: int, *, next_at: dt.datetime, outcome: str,
                   now: dt.datetime) -> int:
        """The batch's still queued rows wait until ``next_at`` (the sweeper queues them).
        Never offered to a server: not counted as deferrals (see :meth:`release`)."""
        with self.conn.begin():
            return int(self._run("defer_rest", {
                "edition": self.edition_id, "after": after, "last": last_id,
                "next_at": self._time(next_at), "outcome": outcome, "now": self._time(now),
            }).rowcount or 0)


def _columns(outcomes: list[Outcome], sending: SendingSettings) -> dict[str, list[Any]]:
    """A group's outcomes as the column arrays the PostgreSQL record statements unnest."""
    return {
        "ids": [o.delivery_id for o in outcomes],
        "states": [o.state.value for o in outcomes],
        "codes": [o.code for o in outcomes],
        "replies": [o.reply[:2000] for o in outcomes],
        "outcomes": [o.label[:32] for o in outcomes],
        "ats": [o.at for o in outcomes],
        "next_ats": [_next_attempt(o, sending) for o in outcomes],
    }


def _next_attempt(outcome: Outcome, sending: SendingSettings) -> dt.datetime | None:
    if outcome.state != D.deferred:
        return None
    return outcome.at + backoff(outcome.attempts, sending)
