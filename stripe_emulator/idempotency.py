"""Stripe-style idempotency keys: replay, mismatch (400 idempotency_error), in use (409), kept 24 hours.

Keys are scoped to the API key that sent them. A result is stored once the endpoint started executing;
requests that fail validation, or that never reach the operation (a fault before it), store nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ApiError

KEY_TTL_SECONDS = 24 * 60 * 60


@dataclass
class StoredResponse:
    status: int
    body: bytes
    request_id: str


@dataclass
class Entry:
    fingerprint: str
    created: float
    request_id: str
    response: StoredResponse | None = None  # None while the first request is still running
    done: threading.Event = field(default_factory=threading.Event)


class IdempotencyStore:
    def __init__(self, lock: threading.RLock, now: Callable[[], float]) -> None:
        self._lock = lock
        self._now = now
        self._entries: dict[tuple[str, str], Entry] = {}

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, *, api_key: str, key: str, fingerprint: str, request_id: str) -> StoredResponse | None:
        """Claim ``key`` for this request, or return the stored response to replay.

        Raises ApiError for a key reused with other parameters or one whose first request is still running.
        """
        with self._lock:
            now = self._now()
            scoped = (api_key, key)
            entry = self._entries.get(scoped)
            if entry is not None and now - entry.created > KEY_TTL_SECONDS:
                del self._entries[scoped]
                entry = None
            if entry is None:
                self._entries[scoped] = Entry(fingerprint=fingerprint, created=now, request_id=request_id)
                if len(self._entries) % 1024 == 0:
                    self._sweep(now)
                return None
            if entry.fingerprint != fingerprint:
                raise ApiError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they were first used "
                    f"with. Try using a key other than '{key}' if you meant to execute a different request.",
                    type="idempotency_error",
                    store=False,
                )
            if entry.response is None:
                raise ApiError(
                    409,
                    "There is currently another in-progress request using this Stripe-Idempotency-Key (that "
                    "probably means you submitted twice, and the requests are running concurrently). Please "
                    "try again later.",
                    code="idempotency_key_in_use",
                    store=False,
                )
            return entry.response

    def finish(self, *, api_key: str, key: str, response: StoredResponse | None) -> None:
        """Store the result under the key, or (``None``) release the key so a retry runs the request afresh."""
        with self._lock:
            entry = self._entries.get((api_key, key))
            if entry is None or entry.response is not None:
                return
            if response is None:
                del self._entries[(api_key, key)]
            else:
                entry.response = response
            entry.done.set()

    def _sweep(self, now: float) -> None:
        expired = [k for k, e in self._entries.items() if now - e.created > KEY_TTL_SECONDS]
        for k in expired:
            del self._entries[k]
