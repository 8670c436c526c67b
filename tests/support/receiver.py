"""A real HTTP receiver for outbound webhooks: a threaded ``http.server`` on 127.0.0.1 that records every
request (headers, raw body, when) and answers as the test scripts it.

``webhook_receiver`` (function fixture): ``receiver.url``; ``receiver.answer(500, 200)`` queues the status of
the next answers (then 200); ``receiver.answer((302, {"Location": ...}, b""))`` with headers and a body;
``receiver.hang(seconds)`` makes every later request wait that long before anything is answered;
``receiver.wait_for(n)`` waits for ``n`` requests and returns them.

``documented_verifier()``: the signature check exactly as docs/webhooks.md prints it, for receivers to copy.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.polling import poll_until

Answer = tuple[int, dict[str, str], bytes]
ROOT = Path(__file__).resolve().parents[2]


def documented_verifier() -> Any:
    """``verify_cartflow_signature`` exactly as docs/webhooks.md prints it."""
    page = (ROOT / "docs" / "webhooks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    [code] = [block for block in blocks if "def verify_cartflow_signature" in block]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)  # noqa: S102 - the page's own snippet
    return namespace["verify_cartflow_signature"]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the request was read

    @property
    def event_id(self) -> str:
        return self.headers.get("cartflow-event-id", "")


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: deque[Answer] = deque()
        self.hang_seconds = 0.0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, *answers: int | Answer) -> None:
        with self.lock:
            for item in answers:
                self.answers.append((item, {}, b"") if isinstance(item, int) else item)

    def hang(self, seconds: float) -> None:
        self.hang_seconds = seconds

    def received(self, event_type: str | None = None) -> list[Received]:
        with self.lock:
            found = list(self.requests)
        return [r for r in found if event_type is None or r.headers.get("cartflow-event-type") == event_type]

    def wait_for(self, count: int, *, event_type: str | None = None, timeout: float = 20.0) -> list[Received]:
        poll_until(
            lambda: len(self.received(event_type)) >= count,
            timeout=timeout,
            what=f"{count} webhook request(s) of {event_type or 'any type'}",
            log=lambda: f"received: {[(r.headers.get('cartflow-event-type'), r.at) for r in self.received()]}",
        )
        return self.received(event_type)

    def _next_answer(self) -> Answer:
        with self.lock:
            return self.answers.popleft() if self.answers else (200, {}, b"ok")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.requests.append(
                    Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                )
            if receiver.hang_seconds:
                time.sleep(receiver.hang_seconds)
            status, headers, payload = receiver._next_answer()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST  # a followed redirect would show up as a GET here

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass

    return Handler


@pytest.fixture
def webhook_receiver():
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.hang_seconds = 0
    receiver.server.shutdown()
    receiver.server.server_close()
