"""Reads of the catalog. Product lookups used on hot paths are cached in Redis (django-redis)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import QuerySet

from inventory.models import Product


@dataclass(frozen=True)
class ProductInfo:
    """What other apps may know of a product (no model instances cross app boundaries)."""

    id: int
    sku: str
    name: str
    price: int
    currency: str
    active: bool
    flash_sale: bool


def _cache_key(product_id: int) -> str:
    return f"catalog:product:{product_id}"


def product_list(*, sku: str | None = None) -> QuerySet[Product]:
    qs = Product.objects.filter(active=True).select_related("stock").order_by("id")
    if sku:
        qs = qs.filter(sku=sku)
    return qs


def product_get(*, product_id: int) -> Product | None:
    return Product.objects.filter(id=product_id, active=True).select_related("stock").first()


def product_info_get(*, product_id: int) -> ProductInfo | None:
    """An active product's catalog facts, through the cache. ``None`` when unknown or inactive."""
    key = _cache_key(product_id)
    try:
        cached = cache.get(key)
    except Exception:  # noqa: BLE001 - a cache outage must not break catalog reads
        cached = None
    if cached is not None:
        info = ProductInfo(**cached) if cached else None
        return info if info and info.active else None
    product = Product.objects.filter(id=product_id).first()
    info = _to_info(product) if product else None
    try:
        cache.set(key, asdict(info) if info else {}, timeout=settings.CARTFLOW_CATALOG_CACHE_SECONDS)
    except Exception:  # noqa: BLE001
        pass
    return info if info and info.active else None


def product_infos_get(*, product_ids: list[int]) -> dict[int, ProductInfo]:
    """Several products at once: one cache round trip, one query for the misses."""
    ids = list(dict.fromkeys(product_ids))
    if not ids:
        return {}
    keys = {_cache_key(pid): pid for pid in ids}
    try:
        found = cache.get_many(list(keys))
    except Exception:  # noqa: BLE001
        found = {}
    out: dict[int, ProductInfo] = {}
    missing = []
    for key, pid in keys.items():
        if key in found:
            if found[key]:
                out[pid] = ProductInfo(**found[key])
        else:
            missing.append(pid)
    if missing:
        fresh = {p.id: _to_info(p) for p in Product.objects.filter(id__in=missing)}
        out.update(fresh)
        try:
            cache.set_many(
                {_cache_key(pid): (asdict(fresh[pid]) if pid in fresh else {}) for pid in missing},
                timeout=settings.CARTFLOW_CATALOG_CACHE_SECONDS,
            )
        except Exception:  # noqa: BLE001
            pass
    return {pid: info for pid, info in out.items() if info.active}


def product_cache_invalidate(*, product_id: int) -> None:
    try:
        cache.delete(_cache_key(product_id))
    except Exception:  # noqa: BLE001
        pass


def stock_available(*, product_id: int) -> int:
    # Every cart add calls this: one plain statement instead of an ORM query (whose compilation was
    # about a tenth of a cart write's CPU in the profile). Stock.product is one-to-one, so no ORDER BY.
    from inventory.models import Stock

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT on_hand - reserved FROM {Stock._meta.db_table} WHERE product_id = %s",  # noqa: S608
            [product_id],
        )
        row = cursor.fetchone()
    return max(0, row[0]) if row else 0


def stock_available_many(*, product_ids: list[int]) -> dict[int, int]:
    from inventory.models import Stock

    rows = Stock.objects.filter(product_id__in=product_ids).values_list("product_id", "on_hand", "reserved")
    return {pid: max(0, on_hand - reserved) for pid, on_hand, reserved in rows}


def _to_info(product: Product) -> ProductInfo:
    return ProductInfo(
        id=product.id,
        sku=product.sku,
        name=product.name,
        price=product.price,
        currency=product.currency,
        active=product.active,
        flash_sale=product.flash_sale,
    )


@dataclass(frozen=True)
class ReservationInfo:
    """What other apps may know of a reservation. ``status`` is HELD, COMMITTED, RELEASED or EXPIRED."""

    holder: str
    product_id: int
    quantity: int
    status: str
    expires_at: datetime


def reservations_for_holder(*, holder: str, product_ids: Iterable[int] | None = None) -> list[ReservationInfo]:
    """Every reservation row of one holder (a checkout id), in product-id order."""
    from inventory.models import Reservation

    qs = Reservation.objects.filter(holder=holder).order_by("product_id")
    if product_ids is not None:
        qs = qs.filter(product_id__in=list(product_ids))
    return [
        ReservationInfo(holder=holder, product_id=pid, quantity=q, status=status, expires_at=expires_at)
        for pid, q, status, expires_at in qs.values_list("product_id", "quantity", "status", "expires_at")
    ]
