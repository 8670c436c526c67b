"""How much one client may hold at once, so that nobody can hold a product's stock away from everyone else.

A client is the signed-in user, else the address (cartflow/clients.py ``hold_cap_key``): a cart token costs
nothing to mint, so it is no identity for a cap. Held means an unfinished checkout (``reserved``,
``awaiting_payment``, ``requires_action``: stock held, nothing paid). Three settings, each 0 = off:

- ``CARTFLOW_MAX_ACTIVE_CHECKOUTS_PER_CLIENT``: unfinished checkouts → 429 ``too_many_active_checkouts``,
  ``Retry-After`` = until the client's oldest hold expires;
- ``CARTFLOW_MAX_UNITS_PER_PRODUCT``: units of one product across the client's unfinished checkouts, this
  one included → 409 ``quantity_limit_exceeded`` (``productId``, ``limit``);
- ``CARTFLOW_FLASH_MAX_UNITS_PER_BUYER``: the same for a product in a flash sale (the lower limit applies).

Where each is checked, cheapest first: one cart's own lines before anything is taken
(:func:`check_cart_lines`, no query; flash-sale lines in the take script, inventory/flashsale.py, before a
token moves); the client's other checkouts by the saga's INSERT itself (:class:`HoldGuard`, built into
``insert_saga`` in orders/saga/insertion.py), so a cap costs the start no statement.

Concurrency: the INSERT gives the new checkout a *hold slot*, the lowest number its client's unfinished
checkouts do not use (below the cap), and a partial unique index allows each slot once per client. Two starts
of one client that read the same holds pick the same slot: the second waits on the index for the first,
loses, and counts again with the first one in sight. So two starts at cap − 1 never both pass, and the units
of two parallel starts are counted together. No lock is taken.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from cartflow.problems import DomainError
from inventory.errors import QuantityLimitExceeded
from orders.errors import TooManyActiveCheckouts


@dataclass(frozen=True)
class HoldGuard:
    """What the saga's INSERT checks against the client's unfinished checkouts."""

    client_key: str
    max_active: int  # 0: no cap on their number
    lines: tuple[tuple[int, int, int], ...]  # (product id, quantity, limit) of each capped line


@dataclass(frozen=True)
class HoldsRefused:
    """The INSERT wrote nothing: ``product_id`` went past its limit, or (None) the client holds the most
    checkouts it may. ``oldest_expiry``: when the client's oldest hold lapses."""

    guard: HoldGuard
    product_id: int | None
    limit: int | None
    oldest_expiry: datetime | None


def unit_limit(*, flash_sale: bool = False) -> int:
    """Most units of one product a client may hold (0 = no limit); in a flash sale the lower of two."""
    limits = [settings.CARTFLOW_MAX_UNITS_PER_PRODUCT]
    if flash_sale:
        limits.append(settings.CARTFLOW_FLASH_MAX_UNITS_PER_BUYER)
    return min((n for n in limits if n > 0), default=0)


def check_cart_lines(lines: Iterable[tuple[int, int]]) -> None:
    """Refuse a cart whose own line is over the per-product limit, before anything is taken or written."""
    limit = unit_limit()
    for product_id, quantity in lines:
        if limit and quantity > limit:
            raise _over(product_id, limit)


def hold_guard(*, client_key: str | None, lines: Iterable[tuple[int, int]], flash_ids: set[int]) -> HoldGuard | None:
    """The guard for a start of ``lines`` (product id, quantity) by ``client_key``; None when no cap is on
    (or the start has no client, as a service call from a test or a command)."""
    max_active = settings.CARTFLOW_MAX_ACTIVE_CHECKOUTS_PER_CLIENT
    capped = []
    for product_id, quantity in lines:
        limit = unit_limit(flash_sale=product_id in flash_ids)
        if limit:
            capped.append((product_id, quantity, limit))
    if not client_key or not (max_active > 0 or capped):
        return None
    return HoldGuard(client_key=client_key, max_active=max(0, max_active), lines=tuple(capped))


def refusal(refused: HoldsRefused) -> DomainError:
    """The problem a refused start answers."""
    if refused.product_id is not None and refused.limit is not None:
        return _over(refused.product_id, refused.limit)
    cap = refused.guard.max_active
    return TooManyActiveCheckouts(
        f"This client already has {cap} unfinished checkouts: finish or cancel one, or retry when the oldest "
        "hold expires.",
        retry_after=_seconds_until(refused.oldest_expiry),
        limit=cap,
    )


def _over(product_id: int, limit: int) -> QuantityLimitExceeded:
    return QuantityLimitExceeded(
        f"At most {limit} units of product {product_id} per buyer, counting the buyer's other unfinished checkouts.",
        productId=product_id,
        limit=limit,
    )


def _seconds_until(expiry: datetime | None) -> int:
    """Until the oldest hold lapses; one already past it is released by the next expiry sweep."""
    if expiry is None:
        return max(1, settings.CARTFLOW_RESERVATION_TTL_SECONDS)
    left = (expiry - timezone.now()).total_seconds()
    return max(1, math.ceil(left)) if left > 0 else max(1, settings.CARTFLOW_RELEASE_INTERVAL_SECONDS)
