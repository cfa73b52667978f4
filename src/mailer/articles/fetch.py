"""Fetching a feed by URL without letting the URL reach into our own network.

A feed URL comes from staff (the admin's import, ``mailer articles import``,
``MAILER_FEED_URLS``), but what it leads to is the feed host's choice: a redirect, or a
DNS answer, can point at 127.0.0.1, the cloud's metadata address 169.254.169.254, or a
database on the private network. So every fetch, and every redirect it follows:

- resolves the host name once and refuses it unless every address it resolves to is a
  public one (no private, loopback, link-local, CGNAT, multicast or reserved address),
  or the host or its address is in ``MAILER_FEED_ALLOWED_HOSTS``;
- connects to the address it checked, not to a second resolution of the name (no DNS
  rebinding between the check and the connection); the Host header and TLS (SNI and the
  certificate check) still use the name;
- ends after ``MAILER_FEED_FETCH_DEADLINE_SECONDS`` in all, redirects included, however
  slowly the server drips its bytes, and refuses more than ``MAILER_FEED_MAX_BYTES``.

The fetch runs on an event loop of its own (``asyncio.timeout`` gives the one total
deadline). It is a blocking call: from a coroutine, run it in a worker thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from mailer.config import ArticleSettings
from mailer.network import IPAddress, allowed, kind_of

MAX_REDIRECTS = 5
USER_AGENT = "mailer-feed-reader/1.0 (+newsletter digest)"


class FetchError(Exception):
    """The URL cannot be fetched; the message says why, naming the URL."""


@dataclass(frozen=True)
class Target:
    """One hop of a fetch: the URL as given, and the checked address to connect to."""

    url: httpx.URL
    address: IPAddress

    @property
    def connect_url(self) -> httpx.URL:
        return self.url.copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii").rpartition("@")[2]


def fetch(url: str, settings: ArticleSettings) -> bytes:
    """The body of a 200 answer at ``url`` (redirects followed, each one checked), within
    the deadline, size cap and allowed hosts of ``settings``."""
    deadline = settings.feed_fetch_deadline_seconds
    try:
        return _run(_fetch_within(url, settings))
    except TimeoutError:
        raise FetchError(f"{url}: no complete answer within {deadline:g} s (the whole "
                         "fetch, redirects included); refused") from None


def _run(fetching: Coroutine[Any, Any, bytes]) -> bytes:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(fetching)
    # This thread already runs an event loop (Playwright's sync API does, in the tests):
    # ours gets a thread of its own, and this one waits for it.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, fetching).result()


async def _fetch_within(url: str, settings: ArticleSettings) -> bytes:
    deadline = settings.feed_fetch_deadline_seconds
    async with asyncio.timeout(deadline):
        # trust_env off: a proxy from the environment would resolve the name itself.
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                     timeout=deadline) as client:
            first = url
            for hop in range(MAX_REDIRECTS + 1):
                try:
                    answer = await _get(client, await check(url, settings.feed_allowed_hosts),
                                        settings.feed_max_bytes)
                except FetchError as exc:
                    if hop:
                        raise FetchError(f"{first}: redirected to {exc}") from None
                    raise
                if isinstance(answer, bytes):
                    return answer
                url = answer  # a redirect: checked again, as the first URL was
    raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects; refused")


async def check(url: str, allowed_hosts: Sequence[str] = ()) -> Target:
    """Resolve ``url``'s host once and check where it leads; raise FetchError if it may not
    be fetched (a public address, or one of ``allowed_hosts``)."""
    try:
        parsed = httpx.URL(url)
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except (httpx.InvalidURL, ValueError) as exc:
        raise FetchError(f"{url}: not a URL we can fetch ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FetchError(f"{url}: only http and https URLs can be fetched")
    host = parsed.host.rstrip(".").lower()
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"{url}: the host {host} cannot be found ({exc})") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0])
                                   for info in found))
    if not addresses:
        raise FetchError(f"{url}: the host {host} has no address")
    for address in addresses:
        if not allowed(host, address, allowed_hosts):
            where = str(address) if host == str(address) else f"{host} is {address}, which"
            raise FetchError(
                f"{url}: {where} is a {kind_of(address)} address; feeds are fetched only from "
                "public addresses (MAILER_FEED_ALLOWED_HOSTS lists exceptions)")
    return Target(parsed, addresses[0])


async def _get(client: httpx.AsyncClient, target: Target, limit: int) -> bytes | str:
    """GET one hop: the body (bytes, at most ``limit``), or the URL it redirects to (str)."""
    url = str(target.url)
    request = client.build_request(
        "GET", target.connect_url,
        headers={"Host": target.host_header, "User-Agent": USER_AGENT},
        extensions={"sni_hostname": target.url.host})
    try:
        answer = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise FetchError(f"{url}: could not be fetched ({exc})") from exc
    try:
        if answer.is_redirect:
            return urljoin(url, answer.headers["location"])
        if answer.status_code != 200:
            raise FetchError(f"{url}: the server answered HTTP {answer.status_code}")
        declared = answer.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise FetchError(f"{url}: larger than {limit:,} bytes, refused")
        body = bytearray()
        async for chunk in answer.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise FetchError(f"{url}: larger than {limit:,} bytes, refused")
        return bytes(body)
    except httpx.HTTPError as exc:
        raise FetchError(f"{url}: could not be fetched ({exc})") from exc
    finally:
        await answer.aclose()
