"""Real concurrency for tests: n threads, released together, each on its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


def race(n: int, work: Callable[[int], object], *, timeout: float = 60.0) -> list[object]:
    """Run ``work(i)`` for i in 0..n-1 on n threads that start at the same instant.

    Each result is what ``work`` returned or the exception it raised (for the test to inspect); each
    thread closes its own connection. Fails if a thread is still running after ``timeout``.
    """
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a racing thread did not finish"
    return results
