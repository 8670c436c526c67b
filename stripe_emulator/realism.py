"""What makes the emulator behave like real Stripe under load: answer latency and request-rate limits.

Both are off by default (the tests and ``make run`` get instant answers and no limit). Real Stripe answers
a PaymentIntent call in a few hundred milliseconds and allows 25 requests per second per endpoint (and 25 in
total in a sandbox, 100 in live mode), answering 429 ``rate_limit`` past that.

- Latency: ``latency_ms`` ± ``jitter_ms`` (uniform; default jitter is 20% of the latency) is added to every
  API answer, 429s included, but not to webhook deliveries or the ``/_emulator`` controls.
- Limits: one token bucket per endpoint and one over all API requests. Stripe counts each named API
  operation as one endpoint, whatever the object id: the key is the method and the route template, e.g.
  ``POST /v1/payment_intents`` or ``POST /v1/payment_intents/{id}/confirm``. A bucket holds one second of
  requests (the burst) and refills at the rate. A request takes a token from both buckets or from neither.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class RealismSpecError(ValueError):
    pass


def parse_rate_limits(spec: str | None) -> tuple[float | None, float | None]:
    """``"25/100"`` → (25 per endpoint, 100 overall); ``"25"`` or ``"25/"`` → endpoint only; ``"/100"`` →
    overall only; ``""``, ``"0"``, ``"off"`` → no limit. Each is requests per second."""
    text = (spec or "").strip().lower()
    if text in ("", "0", "off", "none", "0/0"):
        return None, None
    endpoint, _, overall = text.partition("/")

    def rate(part: str) -> float | None:
        part = part.strip()
        if part in ("", "0", "off"):
            return None
        try:
            value = float(part)
        except ValueError:
            raise RealismSpecError(
                f"rate limits must look like PER_ENDPOINT/GLOBAL requests per second (e.g. 25/100), not {spec!r}"
            ) from None
        if not value > 0:
            raise RealismSpecError(f"rate limits must be positive numbers, not {spec!r}")
        return value

    return rate(endpoint), rate(overall)


@dataclass
class _Bucket:
    rate: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now


@dataclass
class RateLimiter:
    """Token buckets: ``per_endpoint`` and ``overall`` requests per second (``None`` = no limit)."""

    per_endpoint: float | None = None
    overall: float | None = None
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def enabled(self) -> bool:
        return self.per_endpoint is not None or self.overall is not None

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        return f"{_fmt(self.per_endpoint)}/{_fmt(self.overall)} per second (endpoint/global)"

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def admit(self, endpoint: str) -> str | None:
        """Take a token for ``endpoint``; ``None`` when admitted, else which limit refused it."""
        if not self.enabled:
            return None
        with self._lock:
            now = self.clock()
            wanted = []
            if self.per_endpoint is not None:
                wanted.append(("endpoint-rate", self._bucket(endpoint, self.per_endpoint, now)))
            if self.overall is not None:
                wanted.append(("global-rate", self._bucket("*", self.overall, now)))
            for reason, bucket in wanted:
                if bucket.tokens < 1:
                    return reason
            for _, bucket in wanted:
                bucket.tokens -= 1
            return None

    def _bucket(self, key: str, rate: float, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate=rate, tokens=rate, updated=now)
        else:
            bucket.refill(now)
        return bucket


@dataclass
class Latency:
    """``ms`` ± ``jitter_ms`` per API answer (``jitter_ms=None``: 20% of ``ms``)."""

    ms: float = 0.0
    jitter_ms: float | None = None
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.ms < 0 or (self.jitter_ms is not None and self.jitter_ms < 0):
            raise RealismSpecError("latency and jitter must be >= 0 ms")
        if self.jitter_ms is None:
            self.jitter_ms = 0.2 * self.ms

    def describe(self) -> str:
        return f"{self.ms:g} ± {self.jitter_ms:g} ms" if self.ms else "off"

    def sample(self) -> float:
        """Seconds to wait before this answer."""
        if not self.ms:
            return 0.0
        jitter = self.jitter_ms or 0.0
        return max(0.0, self.ms + self.rng.uniform(-jitter, jitter)) / 1000


def _fmt(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:g}"
