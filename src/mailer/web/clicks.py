"""``/r/<edition>/<link>/<signature>``: a followed link of an edition, counted and sent on.

303 to the link's own address; the count is the edition's and the link's, nothing of the
reader (:mod:`mailer.clicks`). Anything we did not sign, or a link the edition does not
have, is 404 and redirects nowhere. A Redis that does not answer loses the count, never
the reader's way to the article.
"""

from __future__ import annotations

import logging

import redis as redis_lib
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from redis.exceptions import RedisError

from mailer.clicks import counting, links
from mailer.config import get_settings
from mailer.db import transaction
from mailer.redis import get_hasty_async_redis, get_hasty_redis
from mailer.web.bounds import id_or_none

router = APIRouter()
log = logging.getLogger(__name__)

_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Robots-Tag": "noindex"}


@router.api_route("/r/{edition}/{position}/{signature}", methods=["GET", "HEAD"],
                  include_in_schema=False)
async def follow(edition: str, position: str, signature: str, request: Request) -> Response:
    # On the event loop, not in the thread pool: a click Redis can answer is a signature
    # check and one round trip, and the hop to a thread would cost more than both.
    edition_id, link = id_or_none(edition), id_or_none(position)
    if edition_id is None or link is None or not links.is_signed(
            edition_id, link, signature, keys=get_settings().all_secrets):
        return _not_found()
    kind = counting.kind_of(request.method, request.headers.get("user-agent"))
    try:  # one round trip: where it leads, if an earlier click found out, and counted
        # (a Redis that hangs holds the reader a quarter second)
        url = await counting.recall_and_count(get_hasty_async_redis(), edition_id, link, kind)
    except RedisError as exc:
        log.warning("a click on edition %d link %d was not counted: %s", edition_id, link, exc)
        return await run_in_threadpool(_from_database, None, edition_id, link, kind)
    if url is None:
        return await run_in_threadpool(_from_database, get_hasty_redis(), edition_id, link,
                                       kind)
    return _to(url)


def _from_database(client: redis_lib.Redis | None, edition_id: int, link: int,
                   kind: counting.Kind) -> Response:
    """A link Redis did not know: looked up, counted, and remembered if it is for good."""
    with transaction() as session:
        found = links.destination(session, edition_id, link)
    if found is None:
        return _not_found()
    url, for_good = found
    if client is not None:
        try:
            counting.count(client, edition_id, link, kind)
            if for_good:
                links.remember(client, edition_id, link, url)
        except RedisError as exc:
            log.warning("a click on edition %d link %d was not counted: %s", edition_id,
                        link, exc)
    return _to(url)


def _to(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=_HEADERS)


class LeaveClicksOut(logging.Filter):
    """Keeps ``/r/…`` out of uvicorn's access log: a line there would tie a followed link to
    the address that followed it, which is as near to a reader as we refuse to record."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        path = args[2] if isinstance(args, tuple) and len(args) > 2 else ""
        return not (isinstance(path, str) and path.startswith("/r/"))


def _not_found() -> Response:
    return PlainTextResponse("This link is not one of ours.", status_code=404,
                             headers=_HEADERS)
