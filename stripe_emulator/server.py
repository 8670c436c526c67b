"""The HTTP front of the emulator: Stripe's v1 API (form-encoded, Bearer auth) and the ``/_emulator`` controls.

Pure standard library, no Django: ``EmulatorServer(...).start()`` serves it from a daemon thread.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .challenge import PREFIX as CHALLENGE_PREFIX
from .challenge import challenge
from .errors import ApiError
from .faults import BEFORE_OPERATION, FaultSpecError, FaultTable
from .forms import parse_form
from .idempotency import StoredResponse
from .realism import Latency, RateLimiter
from .state import EmulatorState
from .store import API_VERSION, RequestInfo, new_id
from .webhooks import WebhookDispatcher, parse_enabled_events

log = logging.getLogger("stripe_emulator")

_ID = r"([A-Za-z0-9_]+)"


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    action: Callable[[EmulatorState, tuple[str, ...], dict[str, Any], RequestInfo], dict[str, Any]]
    endpoint: str  # "POST /v1/payment_intents/{id}/confirm": what a per-endpoint rate limit counts


def _route(method: str, path: str, action) -> Route:
    return Route(method, re.compile("^" + path.replace("{id}", _ID) + "$"), action, f"{method} {path}")


ROUTES = [
    _route("POST", "/v1/payment_intents", lambda s, a, p, r: s.payment_intent_create(p, r)),
    _route("GET", "/v1/payment_intents", lambda s, a, p, r: s.list("payment_intent", p)),
    _route("GET", "/v1/payment_intents/{id}", lambda s, a, p, r: s.retrieve("payment_intent", a[0], p.get("expand"))),
    _route("POST", "/v1/payment_intents/{id}", lambda s, a, p, r: s.payment_intent_update(a[0], p, r)),
    _route("POST", "/v1/payment_intents/{id}/confirm", lambda s, a, p, r: s.payment_intent_confirm(a[0], p, r)),
    _route("POST", "/v1/payment_intents/{id}/cancel", lambda s, a, p, r: s.payment_intent_cancel(a[0], p, r)),
    _route("POST", "/v1/payment_intents/{id}/capture", lambda s, a, p, r: s.payment_intent_capture(a[0], p, r)),
    _route("POST", "/v1/refunds", lambda s, a, p, r: s.refund_create(p, r)),
    _route("GET", "/v1/refunds", lambda s, a, p, r: s.list("refund", p)),
    _route("GET", "/v1/refunds/{id}", lambda s, a, p, r: s.retrieve("refund", a[0], p.get("expand"))),
    _route("GET", "/v1/charges/{id}", lambda s, a, p, r: s.retrieve("charge", a[0], p.get("expand"))),
    _route("GET", "/v1/payment_methods/{id}", lambda s, a, p, r: s.retrieve("payment_method", a[0])),
    _route("GET", "/v1/events", lambda s, a, p, r: s.list("event", p)),
    _route("GET", "/v1/events/{id}", lambda s, a, p, r: s.retrieve("event", a[0])),
]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    emulator: EmulatorServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body in one segment: without these, Nagle + delayed ACK add ~40 ms to every answer.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server: _HTTPServer
    server_version = "stripe-emulator"
    sys_version = ""
    _delay = 0.0  # seconds of configured latency this API request still owes (realism.py)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.emulator.verbose:
            log.info("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        emulator = self.server.emulator
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._delay = 0.0
        try:
            if parts.path.startswith(CHALLENGE_PREFIX):  # a page for the shopper's browser, not the API
                status, headers, page = challenge(emulator.state, method, parts.path, body)
                self._send(status, page, headers, content_type="text/html; charset=utf-8")
            elif parts.path.startswith("/_emulator/"):
                status, payload = emulator.control(method, parts.path, body)
                self._send(status, json.dumps(payload).encode())
            else:
                with emulator.in_flight():
                    self._api(method, parts.path, parts.query, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _wait(self) -> None:
        """Spend this API request's configured latency (once), outside every lock."""
        if self._delay > 0:
            time.sleep(self._delay)
        self._delay = 0.0

    def _send(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> None:
        self._wait()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Stripe-Version", API_VERSION)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        """Close the connection without answering: the client sees a reset, not a response."""
        self._wait()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _api_key(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = credential.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(credential).decode().split(":", 1)[0]
            except ValueError:
                return None
        else:
            return None
        return key if key.startswith(("sk_", "rk_")) and len(key) > 3 else None

    # -- Stripe's API -----------------------------------------------------------------------------------------
    def _api(self, method: str, path: str, query: str, body: bytes) -> None:
        emulator = self.server.emulator
        request_id = new_id("req", 14)
        headers = {"Request-Id": request_id}
        self._delay = emulator.latency.sample()
        api_key = self._api_key()
        if api_key is None:
            error = ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
            self._send(401, json.dumps(error.body()).encode(), {**headers, "WWW-Authenticate": 'Bearer realm="Stripe"'})
            return
        route, args = _match(method, path)
        if route is None:
            error = ApiError(404, f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs.")
            self._send(404, json.dumps(error.body()).encode(), headers)
            return
        limited = emulator.rate_limiter.admit(route.endpoint)
        if limited:
            # Before faults and idempotency: a rate-limited request changes nothing and claims no key. Stripe's
            # client libraries do not retry these (only lock timeouts get Stripe-Should-Retry: true).
            error = ApiError(
                429,
                "Request rate limit exceeded. You can learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
                code="rate_limit",
            )
            headers["Stripe-Rate-Limited-Reason"] = limited
            self._send(429, json.dumps(error.body()).encode(), headers)
            return
        params = parse_form(body if method == "POST" else query)
        fired = emulator.faults.take(method, path)
        kinds = {f.fault: f for f in fired}
        for kind in BEFORE_OPERATION:
            if kind in kinds:
                self._fault_before(kind, kinds[kind].ms, headers)
                return
        idempotency_key = self.headers.get("Idempotency-Key") if method == "POST" else None
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
            fingerprint = f"{method} {path} " + json.dumps(params, sort_keys=True)
            try:
                stored = emulator.state.idempotency.begin(
                    api_key=api_key, key=idempotency_key, fingerprint=fingerprint, request_id=request_id
                )
            except ApiError as exc:
                self._send(exc.status, json.dumps(exc.body()).encode(), headers)
                return
            if stored is not None:
                if "lose_response" in kinds:
                    self._drop()
                    return
                replay = {**headers, "Idempotent-Replayed": "true", "Original-Request": stored.request_id}
                self._send(stored.status, stored.body, replay)
                return
        latency = sum(f.ms for f in fired if f.fault == "latency")
        if latency:
            time.sleep(latency / 1000)
        self._wait()  # the configured latency, inside the idempotency window like Stripe's own processing time
        req = RequestInfo(
            request_id=request_id,
            idempotency_key=idempotency_key,
            force_decline="decline" in kinds,
            base_url=f"http://{self.headers.get('Host') or f'{emulator.host}:{emulator.port}'}",
        )
        store = True
        try:
            status, payload = 200, route.action(emulator.state, args, params, req)
        except ApiError as exc:
            status, payload, store = exc.status, exc.body(), exc.store
            headers.update(exc.headers)
        except Exception:  # a bug in the emulator: answer like Stripe's 500, keep the key free for a retry
            log.error("emulator error on %s %s\n%s", method, path, traceback.format_exc())
            status, payload, store = (
                500,
                {"error": {"type": "api_error", "message": "An unknown error occurred"}},
                False,
            )
        raw = json.dumps(payload, indent=2).encode()
        if idempotency_key:
            emulator.state.idempotency.finish(
                api_key=api_key,
                key=idempotency_key,
                response=StoredResponse(status, raw, request_id) if store else None,
            )
        if "lose_response" in kinds:
            self._drop()
            return
        self._send(status, raw, headers)

    def _fault_before(self, kind: str, ms: int, headers: dict[str, str]) -> None:
        if kind == "timeout":
            time.sleep(ms / 1000)
            self._drop()
            return
        if kind == "rate_limit":
            error = ApiError(
                429,
                "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                code="rate_limit",
            )
            self._send(429, json.dumps(error.body()).encode(), headers)
            return
        body = {"error": {"type": "api_error", "message": "An unknown error occurred (injected http_500)."}}
        self._send(500, json.dumps(body).encode(), headers)


def _match(method: str, path: str) -> tuple[Route | None, tuple[str, ...]]:
    for route in ROUTES:
        if route.method == method:
            found = route.pattern.match(path)
            if found:
                return route, found.groups()
    return None, ()


class EmulatorServer:
    """A Stripe emulator on ``host:port`` (0 = a free port), serving from a daemon thread.

    >>> server = EmulatorServer(port=0, webhook_url=None, webhook_secret="whsec_test").start()
    >>> server.url  # doctest: +SKIP
    'http://127.0.0.1:54321'
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_url: str | None = None,
        webhook_secret: str = "whsec_test",
        *,
        webhook_max_attempts: int = 5,
        webhook_retry_base: float = 0.5,
        webhook_timeout: float = 5.0,
        enabled_events: str | list[str] | tuple[str, ...] | None = None,
        latency_ms: float = 0,
        latency_jitter_ms: float | None = None,
        rate_limits: tuple[float | None, float | None] = (None, None),
        verbose: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.verbose = verbose
        self.webhooks = WebhookDispatcher(
            url=webhook_url,
            secret=webhook_secret,
            max_attempts=webhook_max_attempts,
            retry_base=webhook_retry_base,
            timeout=webhook_timeout,
            enabled_events=parse_enabled_events(enabled_events),
        )
        self._webhook_defaults = (
            webhook_secret, webhook_max_attempts, webhook_retry_base, self.webhooks.enabled_events,
        )  # fmt: skip
        self.state = EmulatorState(on_event=self.webhooks.submit)
        self.webhooks._now = self.state.now
        self.faults = FaultTable(self.state.lock)
        self.latency = Latency(latency_ms, latency_jitter_ms)
        self.rate_limiter = RateLimiter(*rate_limits)
        self._flight_lock = threading.Lock()
        self.api_in_flight = 0
        self.api_peak_in_flight = 0  # most API requests answered at once (the server is threaded)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def webhook_secret(self) -> str:
        return self.webhooks.secret

    def bind(self) -> EmulatorServer:
        self._httpd = _HTTPServer((self.host, self.port), _Handler)
        self._httpd.emulator = self
        self.port = self._httpd.server_address[1]
        self.webhooks.start()
        return self

    def start(self) -> EmulatorServer:
        """Bind and serve from a daemon thread; returns self (so ``EmulatorServer().start().url`` works)."""
        self.bind()
        assert self._httpd is not None
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="stripe-emulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Bind and serve in the calling thread until interrupted (the command line)."""
        self.bind()
        assert self._httpd is not None
        try:
            self._httpd.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        if self._httpd is not None:
            if self._thread is not None:
                self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.webhooks.stop()

    def reset(self) -> None:
        """Forget every object, event, idempotency key, fault, queued webhook, rate-limit bucket and clock offset.

        Webhook settings changed through ``configure`` go back to the constructor's; the URL is kept.
        """
        self.faults.clear()
        self.rate_limiter.reset()
        with self._flight_lock:
            self.api_peak_in_flight = self.api_in_flight
        self.webhooks.reset()
        hooks = self.webhooks
        hooks.secret, hooks.max_attempts, hooks.retry_base, hooks.enabled_events = self._webhook_defaults
        self.state.reset()

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        with self._flight_lock:
            self.api_in_flight += 1
            self.api_peak_in_flight = max(self.api_peak_in_flight, self.api_in_flight)
        try:
            yield
        finally:
            with self._flight_lock:
                self.api_in_flight -= 1

    def set_webhook_url(self, url: str | None) -> None:
        self.webhooks.url = url

    def set_enabled_events(self, events: str | list[str] | tuple[str, ...] | None) -> None:
        """Deliver only these event types (``"*"``/``None`` = all); ``reset`` restores the constructor's."""
        self.webhooks.enabled_events = parse_enabled_events(events)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the /_emulator control API ---------------------------------------------------------------------------
    def control(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            return 400, {"error": f"invalid JSON body: {exc}"}
        route = (method, path.rstrip("/"))
        try:
            if route == ("GET", "/_emulator/health"):
                return 200, {
                    "status": "ok",
                    "url": self.url,
                    **self.state.counts(),
                    "latency": self.latency.describe(),
                    "rate_limits": self.rate_limiter.describe(),
                    "api_in_flight": self.api_in_flight,
                    "api_peak_in_flight": self.api_peak_in_flight,
                }
            if route == ("POST", "/_emulator/reset"):
                self.reset()
                return 200, {"status": "reset"}
            if route == ("GET", "/_emulator/faults"):
                return 200, {"faults": self.faults.list()}
            if route == ("POST", "/_emulator/faults"):
                return 201, self.faults.add(data).as_dict()
            if route == ("DELETE", "/_emulator/faults"):
                self.faults.clear()
                return 200, {"faults": []}
            if route == ("GET", "/_emulator/webhooks"):
                return 200, self.webhooks.status()
            if route == ("POST", "/_emulator/webhooks"):
                return self._webhook_action(data)
            if route == ("GET", "/_emulator/events"):
                with self.state.lock:
                    return 200, {"events": list(self.state.events.values())}
            if route == ("POST", "/_emulator/clock"):
                with self.state.lock:
                    self.state.clock_offset += float(data.get("advance_seconds", 0))
                    expired = self.state.expire_authorizations()  # time passed for the authorizations too
                    return 200, {"now": self.state.now(), "offset": self.state.clock_offset, "expired": expired}
            found = re.match(r"^/_emulator/refunds/([A-Za-z0-9_]+)/settle$", path)
            if method == "POST" and found:
                status = data.get("status")
                return 200, self.state.refund_settle(found.group(1), str(status), data.get("failure_reason"))
            found = re.match(r"^/_emulator/payment_intents/([A-Za-z0-9_]+)/authenticate$", path)
            if method == "POST" and found:
                outcome = data.get("outcome", "succeed")
                if outcome not in ("succeed", "fail"):
                    return 400, {"error": "outcome must be succeed or fail"}
                return 200, self.state.payment_intent_authenticate(found.group(1), outcome)
        except FaultSpecError as exc:
            return 400, {"error": str(exc)}
        except ApiError as exc:
            return exc.status, exc.body()
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"unknown emulator endpoint {method} {path}"}

    def _webhook_action(self, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        action = data.get("action")
        hooks = self.webhooks
        if action in ("redeliver", "duplicate") and data.get("event_id"):
            with self.state.lock:
                event = self.state.events.get(data["event_id"])
            if event is None:
                return 404, {"error": f"no such event {data['event_id']}"}
            hooks.redeliver(event, times=int(data.get("times", 1)), delay=float(data.get("ms", 0)) / 1000)
        elif action == "duplicate":
            hooks.duplicate_next(events=int(data.get("events", 1)), times=int(data.get("times", 2)))
        elif action == "delay" and data.get("event_id"):
            return self._webhook_action({**data, "action": "redeliver", "times": data.get("times", 1)})
        elif action == "delay":
            hooks.delay_next(events=int(data.get("events", 1)), seconds=float(data.get("ms", 1000)) / 1000)
        elif action == "reorder":
            hooks.reorder_next(events=int(data.get("events", 2)))
        elif action == "pause":
            hooks.pause()
        elif action == "resume":
            order = data.get("order", "fifo")
            if order not in ("fifo", "reverse", "shuffle"):
                return 400, {"error": "order must be fifo, reverse or shuffle"}
            hooks.resume(order)
        elif action == "configure":
            if "url" in data:
                hooks.url = data["url"]
            if "secret" in data:
                hooks.secret = str(data["secret"])
            if "max_attempts" in data:
                hooks.max_attempts = max(1, int(data["max_attempts"]))
            if "retry_base_ms" in data:
                hooks.retry_base = max(0, int(data["retry_base_ms"])) / 1000
            if "enabled_events" in data:
                hooks.enabled_events = parse_enabled_events(data["enabled_events"])
        else:
            return 400, {"error": "action must be redeliver, duplicate, delay, reorder, pause, resume or configure"}
        status = hooks.status()
        status.pop("deliveries")
        return 200, status
