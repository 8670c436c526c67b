"""bench/driver.py: bounded by count, records outcomes by problem code, refuses non-loopback targets; its
HTTP/1.1 client reads every framing a server may answer with and says so when no answer comes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bench.driver import ClientState, LoopbackClient, Response, assert_loopback, run


def test_refuses_non_loopback_targets():
    with pytest.raises(ValueError):
        assert_loopback("http://10.1.2.3:8000")
    assert_loopback("http://127.0.0.1:8000")


@pytest.mark.django_db(transaction=True)
def test_counts_requests_and_problem_codes(live_server):
    async def mixed(http: LoopbackClient, state: ClientState) -> Response:
        return await http.get("/healthz" if state.sent % 2 == 0 else "/api/nowhere")

    result = run(base_url=live_server.url, request=mixed, name="mixed", clients=4, seconds=30, max_requests=40)
    assert result.requests == 40
    assert sum(result.statuses.values()) == 40
    assert result.errors["not_found"] == result.statuses[404] >= 16
    assert 0 < result.p50 <= result.p95 <= result.p99


def _serve(answers: list[bytes]):
    """A raw TCP server on a free loopback port answering its n-th request with ``answers[n]`` (b"" closes
    without answering; b"hang" never answers); returns the coroutine to run with a client, and the log of
    (connection number, request line) it saw."""
    seen: list[tuple[int, str]] = []

    async def with_client(body):  # noqa: ANN001, ANN202
        connections = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            mine = connections
            while answers:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                lines = head.split(b"\r\n")
                length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                seen.append((mine, head.split(b"\r\n")[0].decode()))
                answer = answers.pop(0)
                if answer == b"hang":
                    await asyncio.sleep(60)
                if not answer:
                    break
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer or b"X-Then-Close" in answer:  # the latter: close, unannounced
                    break
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, LoopbackClient(f"http://127.0.0.1:{port}", timeout=0.5) as client:
            return await body(client)

    return with_client, seen


def test_the_client_reads_length_chunked_and_close_framed_bodies_and_reconnects_after_a_close():
    with_client, seen = _serve(
        [
            b'HTTP/1.1 201 Created\r\nContent-Length: 11\r\nX-Cart-Token: abc\r\n\r\n{"a": true}',
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"b"\r\n3\r\n: 2\r\n1\r\n}\r\n0\r\n\r\n',
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 2\r\n\r\nbusy",
            b"HTTP/1.1 204 No Content\r\nX-Then-Close: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]
    )

    async def five(client: LoopbackClient) -> list[Response]:
        return [
            await client.post("/one", json={"x": 1}, headers={"X-Cart-Token": "t"}),
            await client.get("/two"),
            await client.post("/three", content=b"raw"),
            await client.get("/four"),
            await asyncio.sleep(0.05) or await client.get("/five"),
        ]

    one, two, three, four_, five = asyncio.run(with_client(five))
    assert (one.status_code, one.json(), one.headers["x-cart-token"], one.headers.get("X-CART-TOKEN")) == (
        201,
        {"a": True},
        "abc",
        "abc",
    )
    assert (two.status_code, two.json()) == (200, {"b": 2})
    assert (three.status_code, three.text, three.headers.get("Retry-After")) == (503, "busy", "2")
    assert (four_.status_code, four_.content, five.text) == (204, b"", "ok")
    # one kept-alive connection until the server announced its close; a new one then, which the server closed
    # unannounced after /four: the client saw that and opened a third instead of failing /five
    assert seen == [
        (1, "POST /one HTTP/1.1"),
        (1, "GET /two HTTP/1.1"),
        (1, "POST /three HTTP/1.1"),
        (2, "GET /four HTTP/1.1"),
        (3, "GET /five HTTP/1.1"),
    ]


def test_the_client_raises_httpx_errors_when_no_answer_comes():
    with_client, _ = _serve([b"", b"hang"])

    async def twice(client: LoopbackClient) -> list[str]:
        names = []
        for path in ("/dropped", "/hangs"):
            try:
                await client.get(path)
            except httpx.HTTPError as exc:
                names.append(type(exc).__name__)
        return names

    assert asyncio.run(with_client(twice)) == ["ReadError", "ReadTimeout"]

    async def refused() -> None:
        async with LoopbackClient("http://127.0.0.1:9", timeout=0.5) as client:
            await client.get("/")

    with pytest.raises(httpx.ConnectError):
        asyncio.run(refused())
