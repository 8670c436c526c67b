"""How payments tells the rest of CartFlow that a PaymentIntent changed, without importing it.

``orders`` registers a listener in its ``AppConfig.ready``; webhook handlers and reconciliation call
every listener with the PaymentIntent as re-fetched from Stripe and where the news came from.
"""

from __future__ import annotations

from collections.abc import Callable

from payments.interface import IntentResult

IntentListener = Callable[[IntentResult, str], None]
_LISTENERS: list[IntentListener] = []
# (intent id, status) -> True when the listener's side already reflects that PaymentIntent at that status
# and a notification would change nothing. Registered beside the listener (``settled=``).
SettledCheck = Callable[[str, str], bool]
_SETTLED: dict[IntentListener, SettledCheck] = {}


class NotKnownYet(Exception):  # noqa: N818 - the name is the interface
    """Raised by a listener when the order or saga for this intent does not exist yet (the webhook raced
    the HTTP response), or is being driven by another process right now. The event is retried later, not
    acknowledged and forgotten."""


def register_intent_listener(fn: IntentListener, *, settled: SettledCheck | None = None) -> IntentListener:
    """Call ``fn(intent, source)`` (source "webhook" | "reconcile") on every intent change. Idempotent.

    ``settled(intent_id, status)``: whether the listener already reflects the intent at that status (see
    :func:`intent_listeners_settled`); without it the listener is never considered settled."""
    if fn not in _LISTENERS:
        _LISTENERS.append(fn)
    if settled is not None:
        _SETTLED[fn] = settled
    return fn


def unregister_intent_listener(fn: IntentListener) -> None:
    if fn in _LISTENERS:
        _LISTENERS.remove(fn)
    _SETTLED.pop(fn, None)


def intent_listeners_settled(*, intent_id: str, status: str) -> bool:
    """True when every listener says it already reflects ``intent_id`` at ``status``: notifying them with
    a re-fetched intent would change nothing, so a webhook may skip the re-fetch."""
    listeners = list(_LISTENERS)
    return all(fn in _SETTLED and _SETTLED[fn](intent_id, status) for fn in listeners)


def intent_listeners_notify(*, intent: IntentResult, source: str) -> None:
    """Every listener sees the intent; a NotKnownYet (or any error) propagates to the caller, which retries."""
    for fn in list(_LISTENERS):
        fn(intent, source)
