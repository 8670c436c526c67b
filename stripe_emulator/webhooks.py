"""Signed webhook delivery in a background thread, with bounded retries and test controls.

Each event is POSTed as JSON with ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>">``
keyed by the endpoint secret, exactly what ``stripe.Webhook.construct_event`` verifies. A non-2xx answer
or a connection error is retried after ``retry_base * 2**(attempt-1)`` seconds, up to ``max_attempts``.
Controls: pause/resume (in order, reversed or shuffled), duplicate, delay or reorder the next events, and
redeliver any stored event.

Like a real Stripe webhook endpoint, the dispatcher has ``enabled_events``: only events of those types are
delivered (``None`` or ``"*"`` = every type). Every event is still recorded and listed by ``/v1/events``;
only delivery is filtered. CartFlow's own runs enable exactly the types it handles, which spares its web
server an intake INSERT and a Celery task per ignored event.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("stripe_emulator.webhooks")


def sign(payload: str, secret: str, timestamp: int) -> str:
    """The ``Stripe-Signature`` header value for ``payload`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def parse_enabled_events(value: str | list[str] | tuple[str, ...] | None) -> frozenset[str] | None:
    """``"*"``, ``None`` or an empty value → ``None`` (every type); else the set of types (comma list or list)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    types = frozenset(str(item).strip() for item in items if str(item).strip())
    if not types or "*" in types:
        return None
    return types


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    event_id: str = field(compare=False)
    payload: str = field(compare=False)
    attempt: int = field(compare=False, default=1)


class WebhookDispatcher:
    def __init__(
        self,
        *,
        url: str | None,
        secret: str,
        now: Callable[[], float] = time.time,
        max_attempts: int = 5,
        retry_base: float = 0.5,
        timeout: float = 5.0,
        enabled_events: frozenset[str] | None = None,
    ) -> None:
        self.url = url
        self.enabled_events = enabled_events
        self.secret = secret
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.timeout = timeout
        self._now = now
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._clear()

    def _clear(self) -> None:
        self._heap: list[_Delivery] = []
        self._held: list[_Delivery] = []
        self._paused = False
        self._in_flight = 0
        self._duplicate = (0, 1)  # (events left, copies of each)
        self._delay = (0, 0.0)  # (events left, seconds)
        self._reorder_left = 0
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=5000)

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="emulator-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=self.timeout + 1)

    def reset(self) -> None:
        with self._cond:
            self._clear()
            self._cond.notify_all()

    # -- intake -----------------------------------------------------------------------------------------------
    def submit(self, event: dict[str, Any]) -> None:
        """Queue a new event, applying the pause / duplicate / delay / reorder controls in force.

        An event whose type is not in ``enabled_events`` is not delivered (it stays listable in /v1/events).
        """
        enabled = self.enabled_events
        if enabled is not None and event.get("type") not in enabled:
            return
        payload = json.dumps(event, indent=2)
        with self._cond:
            copies, delay = 1, 0.0
            if self._duplicate[0] > 0:
                copies = self._duplicate[1]
                self._duplicate = (self._duplicate[0] - 1, self._duplicate[1])
            if self._delay[0] > 0:
                delay = self._delay[1]
                self._delay = (self._delay[0] - 1, self._delay[1])
            for _ in range(copies):
                delivery = _Delivery(time.monotonic() + delay, next(self._seq), event["id"], payload)
                if self._paused or self._reorder_left > 0:
                    self._held.append(delivery)
                else:
                    heapq.heappush(self._heap, delivery)
            if self._reorder_left > 0:
                self._reorder_left -= 1
                if self._reorder_left == 0 and not self._paused:
                    self._release("reverse")
            self._cond.notify_all()

    def redeliver(self, event: dict[str, Any], *, times: int = 1, delay: float = 0.0) -> None:
        payload = json.dumps(event, indent=2)
        with self._cond:
            for _ in range(times):
                heapq.heappush(self._heap, _Delivery(time.monotonic() + delay, next(self._seq), event["id"], payload))
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self, order: str = "fifo") -> None:
        with self._cond:
            self._paused = False
            self._reorder_left = 0
            self._release(order)
            self._cond.notify_all()

    def duplicate_next(self, *, events: int = 1, times: int = 2) -> None:
        with self._cond:
            self._duplicate = (events, times)

    def delay_next(self, *, events: int = 1, seconds: float) -> None:
        with self._cond:
            self._delay = (events, seconds)

    def reorder_next(self, *, events: int = 2) -> None:
        """Hold the next ``events`` events and deliver them in reverse order once the last one arrives."""
        with self._cond:
            self._reorder_left = events

    def _release(self, order: str) -> None:
        held, self._held = self._held, []
        if order == "reverse":
            held.reverse()
        elif order == "shuffle":
            random.shuffle(held)
        now = time.monotonic()
        for delivery in held:
            delivery.due = max(now, delivery.due)
            delivery.seq = next(self._seq)
            heapq.heappush(self._heap, delivery)

    # -- observing --------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._cond:
            return {
                "url": self.url,
                "paused": self._paused,
                "queued": len(self._heap),
                "held": len(self._held),
                "in_flight": self._in_flight,
                "max_attempts": self.max_attempts,
                "retry_base_ms": int(self.retry_base * 1000),
                "enabled_events": sorted(self.enabled_events) if self.enabled_events is not None else ["*"],
                "deliveries": list(self.log),
            }

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued or being sent (held events do not count). True when idle."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    # -- the sender -------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0].due > time.monotonic()):
                    wait = self._heap[0].due - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
                delivery = heapq.heappop(self._heap)
                url = self.url
                self._in_flight += 1
            status: int | None = None
            error: str | None = "no webhook url configured"
            try:
                if url:
                    status, error = self._send(url, delivery)
            except Exception as exc:  # never let one delivery kill the sender thread
                error = f"{type(exc).__name__}: {exc}"
            finally:
                with self._cond:
                    self._in_flight -= 1
                    ok = status is not None and 200 <= status < 300
                    self.log.append(
                        {
                            "event_id": delivery.event_id,
                            "attempt": delivery.attempt,
                            "status": status,
                            "error": error,
                            "ok": ok,
                            "at": time.time(),
                        }  # fmt: skip
                    )
                    if not ok and url and delivery.attempt < self.max_attempts:
                        delivery.due = time.monotonic() + self.retry_base * 2 ** (delivery.attempt - 1)
                        delivery.attempt += 1
                        delivery.seq = next(self._seq)
                        heapq.heappush(self._heap, delivery)
                    self._cond.notify_all()

    def _send(self, url: str, delivery: _Delivery) -> tuple[int | None, str | None]:
        header = sign(delivery.payload, self.secret, int(self._now()))
        request = urllib.request.Request(
            url,
            data=delivery.payload.encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": header,
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
                return response.status, None
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, ValueError) as exc:  # connection refused, reset, timeout, bad URL
            return None, f"{type(exc).__name__}: {exc}"
