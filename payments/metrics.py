"""Prometheus metrics of Stripe calls and webhooks, counted where payments knows the fact.

- ``cartflow_stripe_calls_total{operation, outcome}``: each gateway operation (payments/gateway.py) once,
  with how it ended: ``ok``, ``declined`` (a card decline is a result), ``refused`` (Stripe refused the
  request or the payment method), ``unavailable`` (Stripe away or the outcome unknown: retried later with
  the same key), ``busy`` (the shared budget had no token: nothing was sent), ``error`` (a bug).
- ``cartflow_stripe_request_seconds{operation}``: each HTTP request sent for an operation (stripe-python's
  retries and the gateway's 429 retries one each), from sending to Stripe's answer. The wait for a budget
  token is not in it: that is ``cartflow_stripe_budget_wait_seconds`` (payments/budget.py).
- ``cartflow_webhooks_received_total{outcome}``: ``new``, ``duplicate`` (an event id already stored) or
  ``invalid`` (bad signature or not an event) (payments/webhooks/intake.py).
- ``cartflow_webhooks_processed_total{outcome}``: what processing a stored event ended in: ``processed``,
  ``ignored``, ``retried`` (Stripe or the checkout not ready: the task tries again), ``failed``, ``parked``
  (retries exhausted, left for staff) (payments/webhooks/handlers.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from prometheus_client import Counter, Histogram

from payments.errors import PaymentMethodInvalid, PaymentPermanentError, PaymentProviderBusy, PaymentTransientError
from payments.interface import IntentResult

P = ParamSpec("P")
R = TypeVar("R")

STRIPE_CALLS = Counter(
    "cartflow_stripe_calls_total",
    "Stripe operations of the gateway, by operation and outcome.",
    ["operation", "outcome"],
)
STRIPE_REQUEST_SECONDS = Histogram(
    "cartflow_stripe_request_seconds",
    "Time from sending one HTTP request to Stripe to its answer (budget wait excluded), by operation.",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5, 10),
)
WEBHOOKS_RECEIVED = Counter(
    "cartflow_webhooks_received_total", "Stripe webhook deliveries, by outcome (new, duplicate, invalid).", ["outcome"]
)
WEBHOOKS_PROCESSED = Counter(
    "cartflow_webhooks_processed_total", "What processing a stored webhook event ended in, by outcome.", ["outcome"]
)

# A webhook event's status after processing → the outcome counted (``received`` again: it will be retried).
_PROCESSED_OUTCOME = {"processed": "processed", "ignored": "ignored", "received": "retried"}

# The operations whose answer may be a decline (a result, not an error: payments/gateway.py).
_CONFIRMS = ("create_confirm", "confirm")

_operation: contextvars.ContextVar[str] = contextvars.ContextVar("stripe_operation", default="other")


def _result_outcome(operation: str, result: object) -> str:
    if operation in _CONFIRMS and isinstance(result, IntentResult) and result.declined:
        return "declined"
    return "ok"


def _error_outcome(exc: BaseException) -> str:
    if isinstance(exc, PaymentProviderBusy):
        return "busy"
    if isinstance(exc, PaymentTransientError):
        return "unavailable"
    if isinstance(exc, PaymentMethodInvalid | PaymentPermanentError):
        return "refused"
    return "error"


def stripe_operation(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate one gateway operation: its HTTP requests are timed under ``operation``
    (:func:`stripe_request_timed`), and each call is counted once with its outcome, from what it returned
    or the error it raised."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def counted(*args: P.args, **kwargs: P.kwargs) -> R:
            token = _operation.set(operation)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                STRIPE_CALLS.labels(operation=operation, outcome=_error_outcome(exc)).inc()
                raise
            finally:
                _operation.reset(token)
            STRIPE_CALLS.labels(operation=operation, outcome=_result_outcome(operation, result)).inc()
            return result

        return counted

    return decorate


@contextlib.contextmanager
def stripe_request_timed() -> Iterator[None]:
    """Around one HTTP request to Stripe (the budget token already taken)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        STRIPE_REQUEST_SECONDS.labels(operation=_operation.get()).observe(time.perf_counter() - started)


def webhook_received(outcome: str) -> None:
    WEBHOOKS_RECEIVED.labels(outcome=outcome).inc()


def webhook_processed(status: str) -> None:
    """Count a stored event's new ``status`` (payments.models.WebhookEvent) as the outcome of processing it."""
    WEBHOOKS_PROCESSED.labels(outcome=_PROCESSED_OUTCOME.get(status, status)).inc()


for _received in ("new", "duplicate", "invalid"):  # every series exists from the start, so rate() sees the first
    WEBHOOKS_RECEIVED.labels(outcome=_received)
for _processed in ("processed", "ignored", "retried", "failed", "parked"):
    WEBHOOKS_PROCESSED.labels(outcome=_processed)
