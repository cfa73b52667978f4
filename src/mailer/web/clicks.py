"""``/r/<edition>/<link>/<signature>``: a followed link of an edition, counted and sent on.

303 to the link's own address; the count is the edition's and the link's, nothing of the
reader (:mod:`mailer.clicks`). Anything we did not sign, or a link the edition does not
have, is 404 and redirects nowhere. A Redis that does not answer loses the count, never
the reader's way to the article.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from redis.exceptions import RedisError
from starlette.background import BackgroundTask

from mailer.clicks import counting, links
from mailer.db import transaction
from mailer.redis import get_redis
from mailer.web.bounds import id_or_none

router = APIRouter()
log = logging.getLogger(__name__)

_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Robots-Tag": "noindex"}


@router.api_route("/r/{edition}/{position}/{signature}", methods=["GET", "HEAD"],
                  include_in_schema=False)
def follow(edition: str, position: str, signature: str, request: Request) -> Response:
    edition_id, link = id_or_none(edition), id_or_none(position)
    if edition_id is None or link is None or not links.is_signed(edition_id, link, signature):
        return _not_found()
    with transaction() as session:
        url = links.destination(session, edition_id, link)
    if url is None:
        return _not_found()
    kind = counting.kind_of(request.method, request.headers.get("user-agent"))
    # Counted once the answer is on its way: a Redis that is slow or away delays nobody.
    return RedirectResponse(url, status_code=303, headers=_HEADERS,
                            background=BackgroundTask(_count, edition_id, link, kind))


def _count(edition_id: int, link: int, kind: counting.Kind) -> None:
    try:
        counting.count(get_redis(), edition_id, link, kind)
    except RedisError as exc:
        log.warning("a click on edition %d link %d was not counted: %s", edition_id, link, exc)


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
