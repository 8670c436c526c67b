"""Catalog writes: import (upsert by sku, all or nothing) and the demo seed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from inventory.models import Product, Stock
from inventory.selectors import product_cache_invalidate

SKU_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CURRENCY_RE = re.compile(r"^[a-z]{3}$")


@dataclass(frozen=True)
class CatalogRow:
    sku: str
    name: str
    price: int
    currency: str
    on_hand: int


class CatalogImportError(Exception):
    """Bad rows, each as (index, reason). Nothing was written."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"row {i}: {reason}" for i, reason in problems))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def catalog_rows_parse(*, data: Any) -> list[CatalogRow]:
    """Validate every row first; raise :class:`CatalogImportError` listing each bad one."""
    if not isinstance(data, list):
        raise CatalogImportError([(-1, "the file must hold a JSON list of rows")])
    problems: list[tuple[int, str]] = []
    rows: list[CatalogRow] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(data):
        if not isinstance(raw, dict):
            problems.append((i, "row is not an object"))
            continue
        missing = [k for k in ("sku", "name", "price", "currency", "onHand") if k not in raw]
        if missing:
            problems.append((i, f"missing {', '.join(missing)}"))
            continue
        sku, name, price, currency, on_hand = (raw[k] for k in ("sku", "name", "price", "currency", "onHand"))
        if not isinstance(sku, str) or not SKU_RE.match(sku):
            problems.append((i, "sku must be 1-64 letters, digits, '.', '_' or '-'"))
        elif sku in seen:
            problems.append((i, f"sku {sku!r} repeats row {seen[sku]}"))
        elif not isinstance(name, str) or not name.strip() or len(name) > 200:
            problems.append((i, "name must be a non-empty string of at most 200 characters"))
        elif not _is_int(price) or price < 0:
            problems.append((i, "price must be a non-negative integer in minor units"))
        elif not isinstance(currency, str) or not CURRENCY_RE.match(currency):
            problems.append((i, "currency must be a lower-case ISO-4217 code such as 'usd'"))
        elif not _is_int(on_hand) or on_hand < 0:
            problems.append((i, "onHand must be a non-negative integer"))
        else:
            seen[sku] = i
            rows.append(CatalogRow(sku=sku, name=name.strip(), price=price, currency=currency, on_hand=on_hand))
    if problems:
        raise CatalogImportError(problems)
    return rows


def catalog_import(*, rows: list[CatalogRow]) -> tuple[int, int]:
    """Upsert by sku in one transaction. Returns (created, updated).

    A row's onHand may not fall below what is reserved now; such a row fails the whole import.
    """
    created = updated = 0
    touched: list[int] = []
    with transaction.atomic():
        existing = {p.sku: p for p in Product.objects.filter(sku__in=[r.sku for r in rows]).select_related("stock")}
        problems: list[tuple[int, str]] = []
        for i, row in enumerate(rows):
            product = existing.get(row.sku)
            if product is None:
                product = Product.objects.create(sku=row.sku, name=row.name, price=row.price, currency=row.currency)
                Stock.objects.create(product=product, on_hand=row.on_hand)
                created += 1
            else:
                Product.objects.filter(pk=product.pk).update(name=row.name, price=row.price, currency=row.currency)
                stock, _ = Stock.objects.get_or_create(product=product)
                if row.on_hand < stock.reserved:
                    problems.append((i, f"onHand {row.on_hand} is below the {stock.reserved} units reserved now"))
                    continue
                changed = Stock.objects.filter(pk=stock.pk, version=stock.version).update(
                    on_hand=row.on_hand, version=stock.version + 1
                )
                if not changed:
                    problems.append((i, "stock changed during the import; run it again"))
                    continue
                updated += 1
            touched.append(product.id)
        if problems:
            transaction.set_rollback(True)
            raise CatalogImportError(problems)
    for pid in touched:
        product_cache_invalidate(product_id=pid)
    return created, updated


DEMO_CATALOG = [
    CatalogRow("CF-TEE-001", "CartFlow T-shirt", 2500, "usd", 1000),
    CatalogRow("CF-MUG-002", "CartFlow mug", 1200, "usd", 500),
    CatalogRow("CF-CAP-003", "CartFlow cap", 1800, "usd", 300),
    CatalogRow("CF-HOOD-004", "CartFlow hoodie", 5500, "usd", 200),
    CatalogRow("CF-STICK-005", "Sticker pack", 400, "usd", 5000),
    CatalogRow("CF-DROP-006", "Limited drop sneaker", 18000, "usd", 50),
]


def catalog_seed_demo() -> tuple[int, int]:
    """Create the demo products that are missing; never touch existing ones (idempotent).

    Product id 1 is the T-shirt with at least 1,000 units on a fresh database.
    """
    created = 0
    with transaction.atomic():
        have = set(Product.objects.filter(sku__in=[r.sku for r in DEMO_CATALOG]).values_list("sku", flat=True))
        for row in DEMO_CATALOG:
            if row.sku in have:
                continue
            product = Product.objects.create(sku=row.sku, name=row.name, price=row.price, currency=row.currency)
            Stock.objects.create(product=product, on_hand=row.on_hand)
            created += 1
    return created, len(DEMO_CATALOG) - created
