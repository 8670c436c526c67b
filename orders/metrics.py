"""Prometheus counters of checkouts, counted where the saga knows the fact (orders/saga/).

No ids in labels: one series per outcome or step. Every checkout that was started ends in exactly one of
``confirmed``, ``failed``, ``expired`` or ``cancelled`` (a paid-late expiry is ``confirmed``), so
``started`` minus the four is the number of checkouts under way. Stuck sagas and the outbox's lag are read
at scrape time (orders/backlog.py).
"""

from __future__ import annotations

from prometheus_client import Counter

CHECKOUT_OUTCOMES = ("started", "confirmed", "failed", "expired", "cancelled")
COMPENSATION_STEPS = ("refund", "cancel_payment_intent", "cancel_order", "release")

CHECKOUTS = Counter(
    "cartflow_checkouts_total",
    "Checkouts started, and how they ended (confirmed, failed, expired, cancelled).",
    ["outcome"],
)
COMPENSATIONS = Counter(
    "cartflow_saga_compensations_total", "Undo steps that compensating sagas ran, by step.", ["step"]
)

for _outcome in CHECKOUT_OUTCOMES:  # every series exists from the start, so rate() sees the first one
    CHECKOUTS.labels(outcome=_outcome)
for _step in COMPENSATION_STEPS:
    COMPENSATIONS.labels(step=_step)


def checkout_counted(outcome: str) -> None:
    CHECKOUTS.labels(outcome=outcome).inc()


def compensation_counted(step: str) -> None:
    COMPENSATIONS.labels(step=step).inc()
