"""A small reusable HTTP load driver: N concurrent asyncio clients on httpx, loopback only.

Each client runs ``request(client, state)`` in a loop until the run's request budget or time budget is
spent. Every request's latency and outcome (HTTP status; the problem ``code`` for errors; the exception
name when no response came) is recorded, and :func:`drive` returns rate and p50/p95/p99::

    async def add(http: httpx.AsyncClient, state: ClientState) -> httpx.Response:
        return await http.post("/api/cart/items", json={...}, headers=state.headers)

    result = run(base_url="http://127.0.0.1:8000", request=add, clients=64, seconds=10)
    print(result.summary())
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import ipaddress
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx


@dataclass
class ClientState:
    """Per-client scratch space (a cart token, counters) that request functions may use."""

    index: int
    headers: dict[str, str] = field(default_factory=dict)
    sent: int = 0
    data: dict[str, Any] = field(default_factory=dict)


class _NoCookieJar(http.cookiejar.CookieJar):
    """Keeps nothing and parses nothing: httpx hands every response to its jar, and parsing the cart's
    Set-Cookie cost the driver a tenth of its CPU per cart write (the server's work is what we measure)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


RequestFn = Callable[[httpx.AsyncClient, ClientState], Awaitable[httpx.Response]]


@dataclass
class Result:
    name: str
    clients: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    statuses: Counter[int]
    errors: Counter[str]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clients": self.clients,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "p50_ms": round(self.p50, 2),
            "p95_ms": round(self.p95, 2),
            "p99_ms": round(self.p99, 2),
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
        }

    def summary(self) -> str:
        errors = ", ".join(f"{k}={v}" for k, v in self.errors.most_common()) or "none"
        return (
            f"{self.name:<14} {self.rate:9.1f} req/s  p50 {self.p50:7.2f} ms  p95 {self.p95:7.2f} ms  "
            f"p99 {self.p99:7.2f} ms  ({self.requests} requests, {self.clients} clients, {self.seconds:.1f} s; "
            f"errors: {errors})"
        )


def assert_loopback(base_url: str) -> None:
    """Refuse to load anything but this machine."""
    host = urlsplit(base_url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}") from exc
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"the load driver only targets loopback addresses, not {host!r}")


def _outcome(response: httpx.Response) -> str | None:
    if response.status_code < 400:
        return None
    try:
        code = response.json().get("code")
    except ValueError:
        code = None
    return str(code or f"http_{response.status_code}")


async def drive(
    *,
    base_url: str,
    request: RequestFn,
    name: str = "load",
    clients: int = 64,
    seconds: float = 10.0,
    max_requests: int | None = None,
    timeout: float = 10.0,
) -> Result:
    """Run ``clients`` concurrent loops of ``request`` until ``seconds`` pass or ``max_requests`` are sent."""
    assert_loopback(base_url)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    budget = {"left": max_requests if max_requests is not None else -1}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    # Loopback is plain HTTP, but each AsyncClient would still build an SSL context and load the CA
    # bundle (a third of the driver's CPU in a 500-request run): build one, share it.
    tls = ssl.create_default_context()
    started = time.perf_counter()
    deadline = started + seconds

    async def one_client(session: httpx.AsyncClient, state: ClientState) -> None:
        while time.perf_counter() < deadline:
            if budget["left"] == 0:
                return
            if budget["left"] > 0:
                budget["left"] -= 1
            t0 = time.perf_counter()
            try:
                response = await request(session, state)
            except httpx.HTTPError as exc:
                latencies.append((time.perf_counter() - t0) * 1000)
                errors[type(exc).__name__] += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            state.sent += 1
            statuses[response.status_code] += 1
            outcome = _outcome(response)
            if outcome:
                errors[outcome] += 1

    async def client_loop(index: int) -> None:
        # One AsyncClient (one keep-alive connection) per simulated client. A single shared pool of 64
        # connections made httpx itself the bottleneck: /healthz measured 202 req/s through it, 1,375 req/s
        # with a client each, and 5,258 req/s from wrk against the same gunicorn. Keep no cookies: request
        # functions send cart tokens as headers, so each client's identity is explicit.
        async with httpx.AsyncClient(
            base_url=base_url, limits=limits, timeout=timeout, cookies=_NoCookieJar(), verify=tls
        ) as client:
            await one_client(client, ClientState(index=index))

    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return Result(name, clients, len(latencies), elapsed, latencies, statuses, errors)


def run(**kwargs: Any) -> Result:
    """:func:`drive` from synchronous code."""
    return asyncio.run(drive(**kwargs))
