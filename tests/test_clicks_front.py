"""The followed links (``/r/…``) are answered at the web app's door (``web.clicks.Follow``,
before Starlette's middleware and routing): the same answers as the route they replace,
over real HTTP to the uvicorn the users run."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select, update
from starlette.responses import RedirectResponse

from mailer.clicks import counting, links
from mailer.clicks.models import EditionLink
from mailer.db import transaction
from mailer.editions.models import Edition
from mailer.redis import get_redis
from tests.support.factories import make_edition, stack_keys

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
#: What an answer of ours says about caching, referrers, sniffing, framing and robots.
SECURITY = {"cache-control": "no-store", "referrer-policy": "no-referrer",
            "x-content-type-options": "nosniff", "x-frame-options": "DENY",
            "x-robots-tag": "noindex"}


def _sent_edition(url: str) -> tuple[int, str]:
    """An edition under way with one link to ``url``; the path of its signed link."""
    edition_id = make_edition()
    with transaction() as session:
        session.add(EditionLink(edition_id=edition_id, position=1, label="One", url=url))
        session.execute(update(Edition).where(Edition.id == edition_id).values(state="sending"))
    return edition_id, f"/r/{edition_id}/1/{links.signature(edition_id, 1, keys=stack_keys())}"


def _counts(edition_id: int) -> tuple[int, int, int]:
    counting.flush(get_redis())
    with transaction() as session:
        row = session.scalars(select(EditionLink).where(
            EditionLink.edition_id == edition_id)).one()
        return row.clicks, row.head_requests, row.scanner_clicks


def test_the_door_answers_as_the_route_did(clean, web) -> None:
    # A link with what Starlette's RedirectResponse quotes (a space, an umlaut) and what it
    # keeps (the query's & and =, a percent escape): the Location is the same bytes.
    target = "https://www.example.org/a b/Grüße?x=1&y=%C3%A9#part"
    edition_id, path = _sent_edition(target)
    client = httpx.Client(base_url=web.url, timeout=10, follow_redirects=False)
    for _ in range(2):  # from the database, then from Redis
        answer = client.get(path, headers={"user-agent": BROWSER})
        assert answer.status_code == 303 and answer.content == b""
        assert answer.headers["location"] == RedirectResponse(target).headers["location"]
        assert {k: answer.headers.get(k) for k in SECURITY} == SECURITY
    head = client.head(path, headers={"user-agent": BROWSER})
    assert head.status_code == 303 and head.content == b""
    assert head.headers["location"] == answer.headers["location"]
    scanner = client.get(path, headers={"user-agent": "Mozilla/5.0 (compatible; PROOFPOINT)"})
    assert scanner.status_code == 303
    assert client.get(path + "/", headers={"user-agent": BROWSER}).status_code == 303
    posted = client.post(path, headers={"user-agent": BROWSER})
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
    assert "location" not in posted.headers
    assert _counts(edition_id) == (3, 1, 1)  # HEAD and the scanner apart; the POST nowhere
    # The rest of the site is the app's as before.
    assert client.get("/healthz").status_code == 200
    assert client.get("/nothing-here").status_code == 404
    client.close()


@pytest.mark.parametrize("tail", [
    "", "1", "1/", "{e}/1", "{e}/1/{sig}/more", "{e}//{sig}", "{e}/1/{sig}x", "{e}/1/%00",
    "{e}/1/{sig}?next=https://evil.example",
])
def test_anything_but_a_signed_link_is_404_and_redirects_nowhere(clean, web, tail) -> None:
    edition_id, path = _sent_edition("https://www.example.org/article")
    sig = path.rsplit("/", 1)[1]
    url = web.url + "/r/" + tail.format(e=edition_id, sig=sig)
    for method in ("GET", "HEAD"):
        answer = httpx.request(method, url, timeout=10)
        if tail.startswith("{e}/1/{sig}?"):  # the query is no part of the link: ignored
            assert answer.status_code == 303
            assert answer.headers["location"] == "https://www.example.org/article"
            continue
        assert answer.status_code == 404, (method, tail)
        assert "location" not in answer.headers
        assert {k: answer.headers.get(k) for k in SECURITY} == SECURITY
        if method == "GET":
            assert answer.text == "This link is not one of ours."
    if not tail.startswith("{e}/1/{sig}?"):
        assert not get_redis().exists(counting.PENDING)


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _descendants(pid: int) -> list[int]:
    found, more = [pid], [pid]
    while more:
        parent = more.pop()
        children = Path(f"/proc/{parent}/task/{parent}/children")
        kids = [int(c) for c in children.read_text().split()] if children.exists() else []
        found += kids
        more += kids
    return found


def test_the_workers_give_the_web_the_cores_first(worker) -> None:
    from mailer.config import get_settings

    assert worker.proc is not None
    wanted = get_settings().sending.worker_niceness
    assert wanted > 0
    own = os.getpriority(os.PRIO_PROCESS, 0)
    processes = [pid for pid in _descendants(worker.proc.pid)
                 if "celery" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
    assert len(processes) >= 3  # the worker and its pool processes
    assert {_niceness(pid) for pid in processes} == {max(wanted, own)}
    # started as honcho starts it (a session of its own): with autogroups, the session's
    # own niceness is what ranks it against the web app, so it is lowered too
    autogroup = Path(f"/proc/{worker.proc.pid}/autogroup")
    if autogroup.exists():
        assert os.getsid(worker.proc.pid) == worker.proc.pid
        assert autogroup.read_text().split()[-1] == str(wanted)
        assert all(Path(f"/proc/{pid}/autogroup").read_text() == autogroup.read_text()
                   for pid in processes)
    # in docker-compose.yml each service is a cgroup of its own: the worker's CPU weight
    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml")
                             .read_text())
    assert compose["services"]["worker"]["cpu_shares"] < 1024
    assert "cpu_shares" not in compose["services"]["web"]
