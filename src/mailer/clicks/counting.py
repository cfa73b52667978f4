"""Counting a followed link: in Redis at the click, into the database once a minute.

A click costs the redirect one Redis round trip (``HINCRBY`` and ``SADD`` in a pipeline)
and no database write; :func:`flush` (the ``flush_clicks`` task, every minute) moves the
counts to :class:`~mailer.clicks.models.EditionLink`. It is exactly-once across crashes:
an edition's counts are first renamed to a batch of their own, the batch is added to the
database together with its id (:class:`~mailer.clicks.models.ClickFlush`) in one
transaction, and only then deleted from Redis. A flush that dies anywhere leaves the batch
in Redis; the next one finds its id in the database (already counted: it is deleted) or
not (counted now).

What is counted is an edition, a link and a kind of request, nothing of who made it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import functools
import re
import uuid
from collections.abc import Mapping
from typing import Any

import redis as redis_lib
import redis.asyncio as redis_asyncio
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from mailer.clicks import links
from mailer.clicks.models import ClickFlush, EditionLink
from mailer.db import transaction, utcnow

KEY = "mailer:clicks:edition:"  # + edition id: a hash of "position:kind" → count
PENDING = "mailer:clicks:pending"  # editions with counts not yet flushed
BATCHES = "mailer:clicks:batches"  # batches renamed away, not yet deleted
BATCH = "mailer:clicks:batch:"  # + edition id + ":" + a random id
LOCK = "mailer:lock:flush-clicks"
#: How long a flushed batch's id is kept: far longer than any flush can be retried.
KEEP_FLUSHES = dt.timedelta(days=2)


class Kind(enum.StrEnum):
    click = "click"  # a person following the link (as far as anyone can tell)
    head = "head"  # a HEAD request: a link checker or a preview, never a read
    scanner = "scanner"  # a known mail-security gateway or link scanner fetching it


#: User agents of the mail-security gateways and link scanners that fetch every link of a
#: message on arrival (as their vendors document: Microsoft Defender Safe Links, Proofpoint
#: URL Defense, Mimecast, Barracuda, Cisco/IronPort, Sophos, Trend Micro, Symantec,
#: Forcepoint, Fortinet), and of programs rather than people (HTTP libraries, crawlers,
#: link-preview fetchers). Lowercase: it is searched in the lowercased user agent, five
#: times quicker than ``re.IGNORECASE`` (which costs a redirect 30–60 µs).
SCANNERS = re.compile(
    r"safelinks|defender|proofpoint|urldefense|mimecast|barracuda|ironport|cisco|sophos"
    r"|trend ?micro|symantec|messagelabs|forcepoint|websense|fortinet|fortiguard|zscaler"
    r"|\bbot\b|bot/|crawler|spider|preview|scanner|python-requests|python-urllib|aiohttp"
    r"|httpx|go-http-client|java/|okhttp|curl/|wget/|libwww|headlesschrome|phantomjs")


_COLUMN = {Kind.click: "clicks", Kind.head: "head_requests", Kind.scanner: "scanner_clicks"}


def kind_of(method: str, user_agent: str | None) -> Kind:
    if method == "HEAD":
        return Kind.head
    if not user_agent or SCANNERS.search(user_agent.lower()):
        return Kind.scanner
    return Kind.click


def count(client: redis_lib.Redis, edition_id: int, position: int, kind: Kind) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(f"{KEY}{edition_id}", f"{position}:{kind}", 1)
    pipe.sadd(PENDING, edition_id)
    pipe.execute()


#: Where a followed link leads, if Redis knows (``links.remember``), counted at once;
#: nothing counted when it does not know.
_RECALL_AND_COUNT = """
local url = redis.call('HGET', KEYS[1], ARGV[1])
if url then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('SADD', KEYS[3], ARGV[3])
end
return url
"""


@functools.lru_cache(maxsize=4)
def _recall_script(client: redis_asyncio.Redis) -> Any:
    return client.register_script(_RECALL_AND_COUNT)  # EVALSHA, loaded when first missing


async def recall_and_count(client: redis_asyncio.Redis, edition_id: int, position: int,
                           kind: Kind) -> str | None:
    """Where a followed link leads if Redis knows (:func:`mailer.clicks.links.remember`),
    and then the click :func:`count`-ed, in one round trip. None: Redis does not know
    the link, and nothing was counted (the caller asks the database, then counts)."""
    known = await _recall_script(client)(
        keys=[f"{links.DESTINATIONS_KEY}{edition_id}", f"{KEY}{edition_id}", PENDING],
        args=[str(position), f"{position}:{kind}", str(edition_id)])
    return None if known is None else _text(known)


def take_batches(client: redis_lib.Redis) -> None:
    """Rename each edition's counts to a batch of their own; new clicks start a new hash.

    Listing the batch, the rename and the edition leaving the pending set happen at once
    (MULTI): no click can land in a hash nobody flushes, and no flush sees a batch that is
    listed but not filled yet."""
    for member in client.smembers(PENDING):
        batch = f"{BATCH}{int(member)}:{uuid.uuid4().hex}"
        pipe = client.pipeline(transaction=True)
        pipe.sadd(BATCHES, batch)
        pipe.rename(f"{KEY}{int(member)}", batch)
        pipe.srem(PENDING, member)
        _, renamed, _ = pipe.execute(raise_on_error=False)
        if isinstance(renamed, redis_lib.ResponseError):  # no such key: nothing to count
            client.srem(BATCHES, batch)


def add_batch(session: Session, batch: str, counts: Mapping[bytes | str, bytes | str]) -> bool:
    """Add one batch's counts in ``session``'s transaction; False if it was added before."""
    if session.get(ClickFlush, batch) is not None:
        return False
    edition = int(batch[len(BATCH):].split(":")[0])
    per_link: dict[int, dict[str, int]] = {}
    for field, value in counts.items():
        where, kind = _text(field).split(":")
        per_link.setdefault(int(where), {})[_COLUMN[Kind(kind)]] = int(value)
    for link, columns in per_link.items():
        session.execute(
            update(EditionLink)
            .where(EditionLink.edition_id == edition, EditionLink.position == link)
            .values({name: getattr(EditionLink, name) + n for name, n in columns.items()}))
    session.add(ClickFlush(id=batch, flushed_at=utcnow()))
    return True


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def forget_old_flushes(session: Session) -> None:
    session.execute(delete(ClickFlush).where(ClickFlush.flushed_at < utcnow() - KEEP_FLUSHES))


def flush(client: redis_lib.Redis) -> int:
    """Move every count from Redis to the database; the number of requests moved.

    One flush at a time (a lock in Redis; another that finds it held does nothing): a
    batch is counted by the transaction that records its id, so even two at once could not
    count one twice, but the second would fail on that id."""
    lock = client.lock(LOCK, timeout=300, blocking=False)
    if not lock.acquire():
        return 0
    try:
        take_batches(client)
        moved = 0
        for member in client.smembers(BATCHES):
            batch = _text(member)
            counts = client.hgetall(batch)
            with transaction() as session:
                if add_batch(session, batch, counts):
                    moved += sum(int(n) for n in counts.values())
            client.delete(batch)
            client.srem(BATCHES, member)
        with transaction() as session:
            forget_old_flushes(session)
        return moved
    finally:
        with contextlib.suppress(redis_lib.RedisError):  # expired meanwhile: no matter
            lock.release()
