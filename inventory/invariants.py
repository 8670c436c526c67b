"""Inventory invariants for `check_invariants`."""

from __future__ import annotations

from django.db.models import F, Q

from cartflow.invariants import invariant
from inventory.models import Stock


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
    from inventory.models import Product

    return [
        f"product {pid} ({sku}) has no stock row"
        for pid, sku in Product.objects.filter(stock__isnull=True).values_list("id", "sku")
    ]
