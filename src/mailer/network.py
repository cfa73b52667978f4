"""Which network addresses the service may reach on behalf of what staff typed: the one rule
for a feed URL (mailer.articles.fetch) and a webhook endpoint (mailer.webhooks).

A URL typed by staff, or a DNS answer or a redirect it leads to, can point at 127.0.0.1,
the cloud's metadata address 169.254.169.254 or a database on the private network. Only
public addresses are reached, unless the host name or a network holding the address is
listed as an exception (``MAILER_FEED_ALLOWED_HOSTS``, ``MAILER_WEBHOOK_ALLOWED_HOSTS``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def allowed(host: str, address: IPAddress, allowed_hosts: Sequence[str] = ()) -> bool:
    """May a request to ``host`` connect to ``address``? ``allowed_hosts``: the host names
    and networks (CIDR) that may be reached although they are not public."""
    if is_public(address):
        return True
    for entry in allowed_hosts:
        entry = entry.strip().rstrip(".").lower()
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            if entry == host:
                return True
    return False


def is_public(address: IPAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        return is_public(mapped)
    return address.is_global and not address.is_multicast


def kind_of(address: IPAddress) -> str:
    """What a non-public address is, in words: loopback, link-local, private…"""
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"
