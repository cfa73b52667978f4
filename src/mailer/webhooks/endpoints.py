"""The endpoints staff register: a URL, a ``whsec_`` secret (made here, shown once), the
events wanted. Adding, removing and enabling again are audited with who did it.

An endpoint's URL must lead to a public address (mailer.network's rule): a staff member's
typo, or a DNS name that resolves to 10.0.0.5, must not make the workers post into our own
network. ``webhook_allowed_hosts`` lists the exceptions. The check is made when the
endpoint is added and again at every attempt (a DNS answer can change).
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.config import WebhookSettings
from mailer.db import utcnow
from mailer.network import IPAddress, allowed, kind_of
from mailer.webhooks.events import EVENTS
from mailer.webhooks.models import DeliveryState, WebhookDelivery, WebhookEndpoint

MAX_URL = 2000


class EndpointError(Exception):
    """An endpoint that cannot be added or found; the message says why."""


class TargetRefused(EndpointError):
    """The URL leads to an address the workers may not post to."""


@dataclass(frozen=True)
class Target:
    """Where one attempt connects: the URL, and the address checked for it."""

    url: str
    host: str
    address: IPAddress


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_target(url: str, allowed_hosts: Sequence[str] = ()) -> Target:
    """Resolve ``url``'s host and check that every address it has may be posted to; raise
    TargetRefused saying why not."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused(f"{url}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"{url}: only http:// and https:// URLs can receive webhooks")
    host = parts.hostname.rstrip(".").lower()
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise TargetRefused(f"{url}: the host {host} cannot be found ({exc})") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0])
                                   for info in found))
    for address in addresses:
        if not allowed(host, address, allowed_hosts):
            where = str(address) if host == str(address) else f"{host} is {address}, which"
            raise TargetRefused(
                f"{url}: {where} is a {kind_of(address)} address; webhooks go to public "
                "addresses only (MAILER_WEBHOOK_ALLOWED_HOSTS lists exceptions)")
    if not addresses:
        raise TargetRefused(f"{url}: the host {host} has no address")
    return Target(url, host, addresses[0])


def add(session: Session, *, url: str, events: Sequence[str], by: str,
        settings: WebhookSettings, description: str = "") -> WebhookEndpoint:
    """Register an endpoint; its ``secret`` is for the caller to show once."""
    url = url.strip()
    if not url:
        raise EndpointError("The URL is missing.")
    if len(url) > MAX_URL:
        raise EndpointError(f"The URL is longer than {MAX_URL} characters.")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise EndpointError(f"Unknown event(s): {', '.join(unknown)}. "
                            f"Known: {', '.join(EVENTS)}.")
    if not events:
        raise EndpointError("Choose at least one event.")
    check_target(url, settings.webhook_allowed_hosts)
    endpoint = WebhookEndpoint(url=url, secret=new_secret(),
                               events=[e for e in EVENTS if e in events],
                               description=description.strip()[:200], created_by=by[:320])
    session.add(endpoint)
    session.flush()
    record(session, actor=by, action="webhook.add", target=f"webhook:{endpoint.id}",
           detail={"url": url, "events": endpoint.events})
    return endpoint


def all_endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def get(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise EndpointError(f"There is no webhook endpoint {endpoint_id}.")
    return endpoint


def remove(session: Session, endpoint_id: int, *, by: str) -> WebhookEndpoint:
    """Remove an endpoint with its deliveries and their log."""
    endpoint = get(session, endpoint_id)
    record(session, actor=by, action="webhook.remove", target=f"webhook:{endpoint.id}",
           detail={"url": endpoint.url})
    session.delete(endpoint)
    session.flush()
    return endpoint


def enable(session: Session, endpoint_id: int, *, by: str) -> WebhookEndpoint:
    """Enable a disabled endpoint again; the deliveries that were still due when it was
    disabled are retried from now (the sweep queues them)."""
    endpoint = get(session, endpoint_id)
    now = utcnow()
    endpoint.enabled = True
    endpoint.failing_since = None
    endpoint.disabled_at = None
    endpoint.disabled_reason = ""
    session.execute(update(WebhookDelivery)
                    .where(WebhookDelivery.endpoint_id == endpoint.id,
                           WebhookDelivery.state == DeliveryState.pending)
                    .values(next_attempt_at=now, retry_from=now, queued_at=None))
    record(session, actor=by, action="webhook.enable", target=f"webhook:{endpoint.id}")
    return endpoint
