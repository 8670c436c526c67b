"""Inventory invariants for `check_invariants`."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from cartflow.invariants import invariant
from inventory.models import Product, Reservation, Stock


@invariant("stock_bounds")
def stock_bounds() -> list[str]:
    """0 <= reserved <= on_hand on every stock row (also a CHECK constraint; this catches a dropped one)."""
    bad = Stock.objects.filter(Q(reserved__lt=0) | Q(on_hand__lt=0) | Q(reserved__gt=F("on_hand")))
    return [
        f"product {s.product_id}: on_hand={s.on_hand} reserved={s.reserved} breaks 0 <= reserved <= on_hand"
        for s in bad
    ]


@invariant("product_has_stock")
def product_has_stock() -> list[str]:
    """Every product has its one stock row."""
    return [
        f"product {pid} ({sku}) has no stock row"
        for pid, sku in Product.objects.filter(stock__isnull=True).values_list("id", "sku")
    ]


@invariant("reserved_matches_held")
def reserved_matches_held() -> list[str]:
    """``reserved`` equals the sum of the product's HELD reservations (one statement: one snapshot)."""
    rows = (
        Stock.objects.annotate(
            held=Coalesce(Sum("product__reservations__quantity", filter=Q(product__reservations__status="HELD")), 0)
        )
        .exclude(reserved=F("held"))
        .values_list("product_id", "reserved", "held")
    )
    return [f"product {pid}: reserved={reserved} but HELD reservations sum to {held}" for pid, reserved, held in rows]


@invariant("no_stale_holds")
def no_stale_holds() -> list[str]:
    """No HELD reservation outlives its expiry by more than two release intervals (the sweep is running)."""
    cutoff = timezone.now() - timedelta(seconds=2 * settings.CARTFLOW_RELEASE_INTERVAL_SECONDS)
    stale = Reservation.objects.filter(status="HELD", expires_at__lt=cutoff).values_list(
        "holder", "product_id", "expires_at"
    )
    return [
        f"reservation {holder}/product {pid} still HELD, expired at {expires_at.isoformat()}"
        for holder, pid, expires_at in stale[:100]
    ]
