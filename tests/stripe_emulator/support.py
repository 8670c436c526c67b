"""What the emulator's tests share: a handle that steers an emulator, a webhook receiver, a free port.

The emulator is standard library only; its tests drive it with the real ``stripe`` client, which is the
point of them. CartFlow's fixtures (tests/support/emulator.py) steer their emulator with the same handle.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import stripe

from stripe_emulator import EmulatorServer

WEBHOOK_SECRET = "whsec_test"
# The folder that holds the package: ``python -m stripe_emulator`` runs from there.
ROOT = Path(__file__).resolve().parents[2]


class EmulatorHandle:
    """What a test uses to steer the emulator; every call goes through its HTTP control API."""

    secret_key = "sk_test_cartflow"

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.url = server.url
        self.secret = server.webhook_secret  # the webhook signing secret (whsec_...)

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"emulator {method} {path} -> {exc.code}: {exc.read().decode()}") from None

    def client(self, **kwargs: Any) -> stripe.StripeClient:
        """A real ``stripe.StripeClient`` aimed at the emulator (tests only: CartFlow's code uses its gateway)."""
        return stripe.StripeClient(self.secret_key, base_addresses={"api": self.url}, **kwargs)

    def add_fault(
        self, match: str, fault: str, *, times: int = 1, ms: int | None = None, probability: float | None = None
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {"match": match, "fault": fault, "times": times}
        if ms is not None:
            spec["ms"] = ms
        if probability is not None:
            spec["probability"] = probability
        return self.control("POST", "/_emulator/faults", spec)

    def clear_faults(self) -> None:
        self.control("DELETE", "/_emulator/faults")

    def faults(self) -> list[dict[str, Any]]:
        return self.control("GET", "/_emulator/faults")["faults"]

    def set_webhook_url(self, url: str | None, *, events: str | tuple[str, ...] | list[str] | None = None) -> None:
        """Deliver to ``url``; ``events`` limits delivery to those types (the fixture's reset restores "*")."""
        self.server.set_webhook_url(url)
        self.server.set_enabled_events(events)

    def webhooks(self, action: str, **options: Any) -> dict[str, Any]:
        """``redeliver`` / ``duplicate`` / ``delay`` / ``reorder`` / ``pause`` / ``resume`` / ``configure``."""
        return self.control("POST", "/_emulator/webhooks", {"action": action, **options})

    def deliveries(self) -> list[dict[str, Any]]:
        return self.control("GET", "/_emulator/webhooks")["deliveries"]

    def wait_for_webhooks(self, timeout: float = 10.0) -> bool:
        """Wait until no webhook is queued or in flight (paused ones excepted)."""
        return self.server.webhooks.wait_idle(timeout)

    def authenticate(self, pi_id: str, outcome: str = "succeed") -> dict[str, Any]:
        """Complete (``succeed``) or fail (``fail``) 3-D Secure for a PaymentIntent in ``requires_action``."""
        return self.control("POST", f"/_emulator/payment_intents/{pi_id}/authenticate", {"outcome": outcome})

    def settle_refund(self, refund_id: str, status: str, failure_reason: str | None = None) -> dict[str, Any]:
        """Move a refund later, as the card network does (``pending`` → ``succeeded``, or ``failed`` afterwards)."""
        body: dict[str, Any] = {"status": status}
        if failure_reason is not None:
            body["failure_reason"] = failure_reason
        return self.control("POST", f"/_emulator/refunds/{refund_id}/settle", body)

    def events(self, type: str | None = None) -> list[dict[str, Any]]:  # noqa: A002 - Stripe's word
        """Every event so far, oldest first, optionally of one type."""
        events = self.control("GET", "/_emulator/events")["events"]
        return [e for e in events if type is None or e["type"] == type]

    def advance_clock(self, seconds: float) -> None:
        self.control("POST", "/_emulator/clock", {"advance_seconds": seconds})

    def reset(self) -> None:
        self.control("POST", "/_emulator/reset")


class Receiver:
    """A tiny webhook endpoint: records every delivery, answers 500 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[dict, str, str]] = []  # (event, raw payload, Stripe-Signature)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with receiver.lock:
                    receiver.received.append((json.loads(raw), raw, self.headers.get("Stripe-Signature", "")))
                    failing = len(receiver.received) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def types(self) -> list[str]:
        return [event["type"] for event, _, _ in self.received]

    def ids(self) -> list[str]:
        return [event["id"] for event, _, _ in self.received]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
