"""``/r/<edition>/<link>/<signature>``: a followed link of an edition, counted and sent on.

303 to the link's own address; the count is the edition's and the link's, nothing of the
reader (:mod:`mailer.clicks`). Anything we did not sign, or a link the edition does not
have, is 404 and redirects nowhere. A Redis that does not answer loses the count, never
the reader's way to the article.

It is a plain ASGI app that the web app hands ``/r/…`` to before anything else of its own
runs (:class:`mailer.web.app.MailerApp`): a redirect is a signature check and one Redis
round trip, and Starlette's middleware, routing and FastAPI's request handling around them
cost about as much again. The headers are built once; only ``Location`` is per link.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from urllib.parse import quote

import redis as redis_lib
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from mailer.clicks import counting, links
from mailer.db import transaction
from mailer.redis import get_hasty_async_redis, get_hasty_redis
from mailer.web.bounds import id_or_none

log = logging.getLogger(__name__)

PREFIX = "/r/"
#: What every answer of ours carries (:mod:`mailer.web.pages`' headers, as far as they
#: matter for a redirect or a line of text): never cached, no referrer to the article, not
#: indexed, never framed, nothing run or loaded from the 404's text.
_HEADERS = [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
            (b"x-robots-tag", b"noindex"), (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")]
_NOT_OURS = b"This link is not one of ours."
_404 = {"type": "http.response.start", "status": 404, "headers": [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(_NOT_OURS)).encode()), *_HEADERS]}
_405 = {"type": "http.response.start", "status": 405, "headers": [
    (b"allow", b"GET, HEAD"), (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"18"), *_HEADERS]}
_NO_BODY: Message = {"type": "http.response.body", "body": b""}


class Follow:
    """The ASGI app of ``/r/…`` (an ``http`` scope whose path starts with :data:`PREFIX`),
    with the keys that signed the links (``Settings.all_secrets``)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self.keys = list(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await send(_405)
            await send({"type": "http.response.body", "body": b"Method Not Allowed"})
            return
        found = self._signed(scope["path"])
        if found is None:
            return await _not_found(send)
        edition_id, link = found
        agent = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                agent = value.decode("latin-1")
                break
        kind = counting.kind_of(method, agent)
        try:  # one round trip: where it leads, if an earlier click found out, and counted
            # (a Redis that hangs holds the reader a quarter second)
            url = await counting.recall_and_count(get_hasty_async_redis(), edition_id, link,
                                                  kind)
        except RedisError as exc:
            log.warning("a click on edition %d link %d was not counted: %s", edition_id, link,
                        exc)
            url = await run_in_threadpool(_from_database, None, edition_id, link, kind)
        else:
            if url is None:
                url = await run_in_threadpool(_from_database, get_hasty_redis(), edition_id,
                                              link, kind)
        if url is None:
            return await _not_found(send)
        await send({"type": "http.response.start", "status": 303,
                    "headers": _redirect_headers(url)})
        await send(_NO_BODY)

    def _signed(self, path: str) -> tuple[int, int] | None:
        """The edition and link of a path we signed; None for anything else."""
        parts = path[len(PREFIX):].split("/")
        if len(parts) == 4 and parts[3] == "":  # a trailing slash: the same link
            parts.pop()
        if len(parts) != 3:
            return None
        edition_id, link = id_or_none(parts[0]), id_or_none(parts[1])
        if edition_id is None or link is None or not links.is_signed(
                edition_id, link, parts[2], keys=self.keys):
            return None
        return edition_id, link


@functools.lru_cache(maxsize=1024)
def _redirect_headers(url: str) -> list[tuple[bytes, bytes]]:
    """The 303's headers to ``url``, quoted as Starlette's ``RedirectResponse`` quotes it
    (an edition has a few dozen links: each is quoted once per process)."""
    location = quote(url, safe=":/%#?=@[]!$&'()*+,;").encode("latin-1")
    return [(b"location", location), (b"content-length", b"0"), *_HEADERS]


async def _not_found(send: Send) -> None:
    await send(_404)
    await send({"type": "http.response.body", "body": _NOT_OURS})


def _from_database(client: redis_lib.Redis | None, edition_id: int, link: int,
                   kind: counting.Kind) -> str | None:
    """A link Redis did not know: looked up, counted, and remembered if it is for good.
    None: the edition has no such link."""
    with transaction() as session:
        found = links.destination(session, edition_id, link)
    if found is None:
        return None
    url, for_good = found
    if client is not None:
        try:
            counting.count(client, edition_id, link, kind)
            if for_good:
                links.remember(client, edition_id, link, url)
        except RedisError as exc:
            log.warning("a click on edition %d link %d was not counted: %s", edition_id,
                        link, exc)
    return url


class LeaveClicksOut(logging.Filter):
    """Keeps ``/r/…`` out of uvicorn's access log: a line there would tie a followed link to
    the address that followed it, which is as near to a reader as we refuse to record."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        path = args[2] if isinstance(args, tuple) and len(args) > 2 else ""
        return not (isinstance(path, str) and path.startswith(PREFIX))
