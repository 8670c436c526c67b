"""How payments tells the rest of CartFlow that a PaymentIntent changed, without importing it.

``orders`` registers a listener in its ``AppConfig.ready``; webhook handlers and reconciliation call
every listener with the PaymentIntent as re-fetched from Stripe and where the news came from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from payments.gateway import IntentResult

IntentListener = Callable[["IntentResult", str], None]
_LISTENERS: list[IntentListener] = []


class NotKnownYet(Exception):  # noqa: N818 - the name is the interface
    """Raised by a listener when the order or saga for this intent does not exist yet (the webhook raced
    the HTTP response). The event is retried later, not acknowledged and forgotten."""


def register_intent_listener(fn: IntentListener) -> IntentListener:
    """Call ``fn(intent, source)`` (source "webhook" | "reconcile") on every intent change. Idempotent."""
    if fn not in _LISTENERS:
        _LISTENERS.append(fn)
    return fn


def unregister_intent_listener(fn: IntentListener) -> None:
    if fn in _LISTENERS:
        _LISTENERS.remove(fn)


def intent_listeners_notify(*, intent: IntentResult, source: str) -> None:
    """Every listener sees the intent; a NotKnownYet (or any error) propagates to the caller, which retries."""
    for fn in list(_LISTENERS):
        fn(intent, source)
