"""A small reusable HTTP load driver: N concurrent asyncio clients, loopback only.

Each client runs ``request(client, state)`` in a loop until the run's request budget or time budget is
spent. A client is a :class:`LoopbackClient`: one keep-alive HTTP/1.1 connection on asyncio's streams.
The driver shares the machine's two CPUs with the server it loads, so its own cost per request is taken
from the server: httpx spent about 2 ms of CPU per hot start here (its request and response models,
httpcore's pool, anyio, h11), a sixth of everything the start cost, where this client spends a fraction
of that. Its errors are httpx's exception classes, so callers catch ``httpx.HTTPError`` as before.

Every request's latency and outcome (HTTP status; the problem ``code`` for errors; the exception
name when no response came) is recorded, and :func:`drive` returns rate and p50/p95/p99::

    async def add(http: LoopbackClient, state: ClientState) -> Response:
        return await http.post("/api/cart/items", json={...}, headers=state.headers)

    result = run(base_url="http://127.0.0.1:8000", request=add, clients=64, seconds=10)
    print(result.summary())
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
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


class Headers(dict[str, str]):
    """A response's headers by lower-cased name (a repeated header keeps its last value)."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


@dataclass
class Response:
    """What the request functions read of an answer: the subset of ``httpx.Response`` they use."""

    status_code: int
    headers: Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)  # json.JSONDecodeError is a ValueError, as with httpx


class LoopbackClient:
    """One keep-alive HTTP/1.1 connection to ``base_url``, opened on first use and again after the server
    closed it. Bodies are read by ``Content-Length``, chunked, or to the end for ``Connection: close``.
    No cookies, no redirects, no TLS: request functions send cart tokens as headers, so each client's
    identity is explicit."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self._head = f"Host: {self.host}:{self.port}\r\n"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, *, headers: dict[str, str] | None = None) -> Response:
        return await self.request("GET", path, headers=headers)

    async def post(
        self, path: str, *, headers: dict[str, str] | None = None, json: Any = None, content: bytes | None = None
    ) -> Response:
        return await self.request("POST", path, headers=headers, json=json, content=content)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
    ) -> Response:
        body = _json_dumps(json) if json is not None else (content or b"")
        head = f"{method} {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n"
        if json is not None:
            head += "Content-Type: application/json\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        raw = (head + "\r\n").encode("latin-1") + body
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(raw)
        except TimeoutError as exc:
            await self.aclose()
            raise httpx.ReadTimeout(f"no answer within {self.timeout} s") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            await self.aclose()
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(self, raw: bytes) -> Response:
        if self._reader is None or self._writer is None or self._reader.at_eof():
            await self.aclose()  # the server closed the kept-alive connection: open a new one
            try:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        reader, writer = self._reader, self._writer
        writer.write(raw)
        await writer.drain()
        status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = Headers()
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            content = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            content = await _read_chunked(reader)
        elif status in (204, 304) or 100 <= status < 200:
            content = b""
        else:
            content = await reader.read()  # no length: the body runs to the end of the connection
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return Response(status, headers, content)

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def __aenter__(self) -> LoopbackClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent to us: the blank line
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


RequestFn = Callable[[LoopbackClient, ClientState], Awaitable[Response]]


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


def _outcome(response: Response) -> str | None:
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
    started = time.perf_counter()
    deadline = started + seconds

    async def one_client(session: LoopbackClient, state: ClientState) -> None:
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
        # One connection per simulated client, as a browser keeps one to the shop.
        async with LoopbackClient(base_url, timeout=timeout) as client:
            await one_client(client, ClientState(index=index))

    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return Result(name, clients, len(latencies), elapsed, latencies, statuses, errors)


def run(**kwargs: Any) -> Result:
    """:func:`drive` from synchronous code."""
    return asyncio.run(drive(**kwargs))
