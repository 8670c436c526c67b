"""Reading this process's Prometheus registry in tests: what a metric changed by since a snapshot.

Counters are process-wide and other tests move them too, so tests compare against a snapshot taken just
before the action instead of expecting absolute values.
"""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Snapshot:
    """``Snapshot()`` now; ``.change(name, **labels)`` later is how much that sample moved since."""

    def __init__(self) -> None:
        self._values = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in REGISTRY.collect()
            if family.name.startswith("cartflow_") and family.type in ("counter", "histogram")
            for s in family.samples
        }

    def change(self, name: str, **labels: str) -> float:
        return sample(name, **labels) - self._values.get((name, tuple(sorted(labels.items()))), 0.0)
