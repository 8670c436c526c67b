"""Who is calling: the client's address, the one answer every throttle and hold cap uses.

``X-Forwarded-For`` is written by whoever sends the request, so it is believed only as far as the
proxies we run: ``CARTFLOW_TRUSTED_PROXIES`` says how many sit in front of the web servers. Each proxy
appends the address it received the connection from, so with N trusted proxies the entry N places from
the right is the address the outermost one saw, and everything left of it is the client's own claim. With
0 (the default, for a server that faces the clients itself) the header is ignored and the peer address of
the connection is the client.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings


def client_address(request: Any) -> str:
    """The client's IP address as the outermost trusted proxy saw it (or the peer's, without proxies)."""
    meta = request.META
    peer = meta.get("REMOTE_ADDR") or ""
    hops = settings.CARTFLOW_TRUSTED_PROXIES
    if hops <= 0:
        return peer
    hops_seen = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if not hops_seen:
        return peer
    # Fewer entries than trusted proxies: the request skipped the outer ones, and the leftmost entry is the
    # address the first proxy it met saw.
    claimed = _address_or_none(hops_seen[-min(hops, len(hops_seen))])
    return claimed or peer


def _address_or_none(text: str) -> str | None:
    """``text`` as a normalized IP address; a port (``1.2.3.4:5678``, ``[::1]:80``) is dropped."""
    candidates = [text]
    if text.startswith("[") and "]" in text:
        candidates.append(text[1 : text.index("]")])
    elif text.count(":") == 1:
        candidates.append(text.split(":", 1)[0])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def address_key(address: str) -> str:
    """What a per-address throttle counts under: an IPv4 address, or an IPv6 address's /64 network.

    An IPv6 host is usually given a whole /64 and can pick any address in it, so counting single
    addresses would let one client rotate through 2^64 of them.
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def hold_cap_key(request: Any) -> str:
    """The client the hold caps count against (orders/saga/hold_caps.py): ``user:<id>`` when signed in, else
    ``addr:<address key>`` of :func:`client_address`. Never the cart token: a new one costs nothing, so it
    is no identity for a cap."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"addr:{address_key(client_address(request))}"
