"""Fault injection: rules that make matching requests fail, hang, lose their response, slow down or decline.

A rule: ``{"match": "POST /v1/payment_intents/*/confirm", "fault": "http_500", "times": 1, "ms": 0,
"probability": 1.0}``. ``match`` is ``"METHOD PATH-GLOB"`` (or just a glob, any method); ``times`` is how
many requests it hits (default 1; 0 = until cleared); ``probability`` makes it fire on a share of them.
"""

from __future__ import annotations

import fnmatch
import itertools
import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

# Faults answered before the operation runs (nothing is stored under the idempotency key), like a failing
# load balancer in front of Stripe.
BEFORE_OPERATION = ("http_500", "timeout", "rate_limit")
KINDS = (*BEFORE_OPERATION, "lose_response", "latency", "decline")
_DEFAULT_MS = {"timeout": 1000, "latency": 500}


class FaultSpecError(ValueError):
    pass


@dataclass
class Fault:
    id: int
    match: str
    method: str | None
    pattern: str
    fault: str
    times: int
    ms: int
    probability: float
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and fnmatch.fnmatchcase(path, self.pattern)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("method")
        data.pop("pattern")
        data["remaining"] = None if self.times == 0 else self.times - self.fired
        return data


class FaultTable:
    def __init__(self, lock: threading.RLock, rng: random.Random | None = None) -> None:
        self._lock = lock
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._rng = rng or random.Random()

    def add(self, spec: dict[str, Any]) -> Fault:
        match = str(spec.get("match") or "*").strip()
        method, _, pattern = match.partition(" ")
        if not pattern:
            method, pattern = "", method
        kind = spec.get("fault")
        if kind not in KINDS:
            raise FaultSpecError(f"fault must be one of {', '.join(KINDS)}")
        try:
            times = int(spec.get("times", 1))
            ms = int(spec.get("ms", _DEFAULT_MS.get(kind, 0)))
            probability = float(spec.get("probability", 1.0))
        except (TypeError, ValueError):
            raise FaultSpecError("times and ms must be integers, probability a number") from None
        if times < 0 or ms < 0 or not 0.0 <= probability <= 1.0:
            raise FaultSpecError("times >= 0, ms >= 0 and 0 <= probability <= 1")
        fault = Fault(next(self._ids), match, method.upper() or None, pattern.strip(), kind, times, ms, probability)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.as_dict() for f in self._faults]

    def take(self, method: str, path: str) -> list[Fault]:
        """The rules that fire for this request; each one fired uses up one of its ``times``."""
        fired: list[Fault] = []
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(method, path):
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                fault.fired += 1
                fired.append(fault)
                if fault.times and fault.fired >= fault.times:
                    self._faults.remove(fault)
        return fired
