"""Extension points for the expiry sweep, so inventory can tell checkouts about expiry without importing them.

The orders app registers both in its ``AppConfig.ready()``:

- an **extend policy** ``fn(holder) -> bool``: True keeps an expired hold (its checkout is charging right
  now, e.g. a slow 3-D Secure payment; Saleor #15246) and the sweep extends it by the reservation TTL;
- an **expired listener** ``fn(holder) -> None``: called once, after the sweep turned the holder's HELD
  rows into EXPIRED, so the saga can compensate.

Inventory never imports orders; dependencies point one way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

_extend_policies: list[Callable[[str], bool]] = []
_expired_listeners: list[Callable[[str], None]] = []


def register_extend_policy(fn: Callable[[str], bool]) -> Callable[[str], bool]:
    """Add a policy; a hold is extended when any policy says so. Registering twice is a no-op."""
    if fn not in _extend_policies:
        _extend_policies.append(fn)
    return fn


def register_expired_listener(fn: Callable[[str], None]) -> Callable[[str], None]:
    """Add a listener called with each holder the sweep expired. Registering twice is a no-op."""
    if fn not in _expired_listeners:
        _expired_listeners.append(fn)
    return fn


def unregister(fn: Callable) -> None:
    """Remove a policy or listener (tests)."""
    for registry in (_extend_policies, _expired_listeners):
        while fn in registry:
            registry.remove(fn)


def should_extend(holder: str) -> bool:
    """True when a policy asks to keep this holder's expired hold. A failing policy counts as "no"."""
    for policy in list(_extend_policies):
        try:
            if policy(holder):
                return True
        except Exception:  # noqa: BLE001 - a broken policy must not stop the sweep
            log.exception("reservation extend policy failed", extra={"holder": holder})
    return False


def notify_expired(holder: str) -> None:
    """Tell every listener; one failing does not stop the others (the saga recovery task is the backstop)."""
    for listener in list(_expired_listeners):
        try:
            listener(holder)
        except Exception:  # noqa: BLE001
            log.exception("reservation expired listener failed", extra={"holder": holder})
