"""Request throttling on Redis in O(1): one script call (INCR, EXPIRE on the first hit) per request.

DRF's ``SimpleRateThrottle`` keeps every request's timestamp in a cached list that it reads, filters,
pickles and writes back on each request: O(rate) work and two round trips. A busy client at a
600/min limit drags a 600-float list through Redis on every call. This fixed-window counter gives the
same contract (N requests per period per client, 429 ``rate_limited`` with ``Retry-After``) for one
round trip and constant work. A registered script rather than a MULTI-less pipeline: redis-py builds a
Pipeline object and parses two replies per call, which was a seventh of a sold-out start's CPU. A
client may get up to 2N requests across a window boundary, which is fine for abuse protection.
"""

from __future__ import annotations

import time
from typing import Any

from django_redis import get_redis_connection
from rest_framework.exceptions import Throttled
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from cartflow.clients import address_key, client_address

# KEYS[1] the window's counter. ARGV[1] its lifetime in seconds. Returns the count including this request.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
# KEYS[1] the window's counter: one hit given back, if the window still exists (never a counter without expiry).
_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""
_scripts: dict[str, Any] = {}  # registered once per process; redis-py re-loads them after a NOSCRIPT


def _run(source: str, key: str, *args: Any) -> int:
    client = get_redis_connection("default")
    if source not in _scripts:
        _scripts[source] = client.register_script(source)
    return int(_scripts[source](keys=[key], args=list(args), client=client))


def _count(key: str, lifetime: int) -> int:
    return _run(_COUNT, key, lifetime)


_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}  # DRF's rate syntax: "20/min", "10/hour"


def _window(rate: str, now: float) -> tuple[int, int, int, float]:
    """``(allowed, period seconds, window number, seconds left in the window)`` for a DRF rate at ``now``."""
    count, _, unit = rate.partition("/")
    allowed, period = int(count), _PERIODS[unit.strip()[0]]
    window = int(now // period)
    return allowed, period, window, (window + 1) * period - now


def throttle_take(*, scope: str, ident: str) -> None:
    """Count one attempt of ``ident`` against the rate of ``scope``; raise DRF's ``Throttled`` when spent.

    For counts a DRF throttle class cannot key, such as a username read from the body. The attempt is
    counted before it is tried, so parallel attempts cannot all pass a check made before any was counted.
    """
    rate = api_settings.DEFAULT_THROTTLE_RATES.get(scope)
    if rate is None:
        return
    allowed, period, window, wait = _window(rate, time.time())
    if _count(f"throttle:{scope}:{ident}:{window}", period + 1) > allowed:
        raise Throttled(wait=max(1.0, wait))


def throttle_give_back(*, scope: str, ident: str) -> None:
    """Undo one :func:`throttle_take` of the current window (e.g. an attempt that turned out to succeed)."""
    rate = api_settings.DEFAULT_THROTTLE_RATES.get(scope)
    if rate is None:
        return
    _allowed, _period, window, _wait = _window(rate, time.time())
    _run(_GIVE_BACK, f"throttle:{scope}:{ident}:{window}")


def address_ident(request: Any) -> str:
    """The per-address part of a throttle key (cartflow/clients.py decides what the address is)."""
    return f"addr:{address_key(client_address(request))}"


class RedisFixedWindowThrottle(SimpleRateThrottle):
    """Scope-rate throttle (rates from ``REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']``), counted in Redis.

    Subclasses set ``scope`` or let the view's ``throttle_scope`` name it, and may override
    :meth:`get_cache_key` (the default: the signed-in user, else the client address). The address is
    always :func:`cartflow.clients.client_address`, never DRF's own reading of ``X-Forwarded-For``.
    """

    scope: str | None = None

    def __init__(self) -> None:  # rates are read per request (settings overrides apply), not at import
        pass

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope) if self.scope else None

    def get_ident(self, request: Any) -> str:
        return address_ident(request)

    def get_cache_key(self, request: Any, view: Any) -> str:
        user = getattr(request, "user", None)
        ident = f"user:{user.pk}" if user is not None and user.is_authenticated else self.get_ident(request)
        return f"throttle:{self.scope}:{ident}"

    def allow_request(self, request: Any, view: Any) -> bool:
        self.scope = self.scope or getattr(view, "throttle_scope", None)
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.num_requests, self.duration, window, self.wait_seconds = _window(self.rate, time.time())
        return _count(f"{key}:{window}", self.duration + 1) <= self.num_requests

    def wait(self) -> float | None:
        return max(1.0, getattr(self, "wait_seconds", 1.0))


class ScopedRedisThrottle(RedisFixedWindowThrottle):
    """Like DRF's ``ScopedRateThrottle``: the view's ``throttle_scope`` names the rate."""


class ScopedAddressThrottle(ScopedRedisThrottle):
    """The view's ``throttle_scope``, always per client address, signed in or not (e.g. flash-queue joins)."""

    def get_cache_key(self, request: Any, view: Any) -> str:
        return f"throttle:{self.scope}:{self.get_ident(request)}"
