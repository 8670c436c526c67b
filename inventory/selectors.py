"""Reads of the catalog. Product lookups used on hot paths are cached in two layers.

- In Redis (django-redis), one key per product, shared by every process.
- In each process, the ``ProductInfo`` objects themselves, valid while the catalog generation
  (``catalog:gen`` in Redis) is the one they were loaded under. Every change to a product goes through
  :func:`product_cache_invalidate`, which sets a new (random) generation, so one small GET tells a process whether
  its copies are still good. A cart of 50 lines used to fetch and unpickle 50 keys on every write (38%
  of a cart write's CPU in the profile); now it reads one integer. When the generation cannot be read
  (Redis down), the process copies are not trusted: reads go to the database as before.
- Within one HTTP request the generation is read once (a checkout start looks products up twice: the
  flash-sale check and the order's prices); ``request_started`` / ``request_finished`` open and close that
  memo (inventory/apps.py), so a Celery task or a shell reads it on every lookup as before.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import QuerySet
from django_redis import get_redis_connection

from inventory.models import Product, Reservation, Stock


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


GENERATION_KEY = "catalog:gen"


class _ProcessCatalog:
    """This process's ``ProductInfo`` copies (``None`` = unknown or inactive), tagged with a generation."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation: bytes | None = None
        self.loaded_at = 0.0
        self.infos: dict[int, ProductInfo | None] = {}
        self.request = threading.local()  # .generation: this thread's request's memo (absent: no request)

    def request_began(self) -> None:
        self.request.generation = None

    def request_ended(self) -> None:
        self.request.__dict__.pop("generation", None)

    def current(self) -> bytes | None:
        """The catalog generation now, or None when Redis cannot say (then nothing local is trusted).

        Read once per request (the memo). A missing generation (a new or flushed Redis) is set to a random
        value, so copies loaded under an earlier Redis never match it."""
        memo = getattr(self.request, "generation", False)
        if memo:
            return memo
        generation = self._read()
        if memo is None and generation is not None:
            self.request.generation = generation
        return generation

    def _read(self) -> bytes | None:
        try:
            client = get_redis_connection("default")
            key = cache.make_key(GENERATION_KEY)
            generation = client.get(key)
            if generation is None:
                client.set(key, secrets.token_hex(8), nx=True)
                generation = client.get(key)
        except Exception:  # noqa: BLE001 - a cache outage must not break catalog reads
            return None
        return generation

    def lookup(self, generation: bytes | None, ids: list[int]) -> tuple[dict[int, ProductInfo | None], list[int]]:
        """(the copies held for ``ids``, the ids not held). Drops every copy when the generation moved."""
        if generation is None:
            return {}, ids
        with self.lock:
            if generation != self.generation or time.monotonic() - self.loaded_at > _max_age():
                self.generation, self.loaded_at, self.infos = generation, time.monotonic(), {}
            held = {pid: self.infos[pid] for pid in ids if pid in self.infos}
        return held, [pid for pid in ids if pid not in held]

    def keep(self, generation: bytes | None, infos: dict[int, ProductInfo | None]) -> None:
        if generation is None:
            return
        with self.lock:
            if generation == self.generation:
                self.infos.update(infos)

    def forget(self) -> None:
        with self.lock:
            self.generation, self.infos = None, {}
        if getattr(self.request, "generation", None):
            self.request.generation = None  # the rest of this request reads the new generation


_process_catalog = _ProcessCatalog()


def generation_memo_open(**_: object) -> None:
    """``request_started``: this thread's request reads the catalog generation once."""
    _process_catalog.request_began()


def generation_memo_close(**_: object) -> None:
    """``request_finished``: back to a read per lookup (a Celery task, a shell)."""
    _process_catalog.request_ended()


def _max_age() -> float:
    """Even with a steady generation, process copies are reloaded this often (a lost bump heals)."""
    return float(settings.CARTFLOW_CATALOG_CACHE_SECONDS)


def product_list(*, sku: str | None = None) -> QuerySet[Product]:
    qs = Product.objects.filter(active=True).select_related("stock").order_by("id")
    if sku:
        qs = qs.filter(sku=sku)
    return qs


def product_get(*, product_id: int) -> Product | None:
    return Product.objects.filter(id=product_id, active=True).select_related("stock").first()


def product_info_get(*, product_id: int) -> ProductInfo | None:
    """An active product's catalog facts, through the caches. ``None`` when unknown or inactive."""
    return product_infos_get(product_ids=[product_id]).get(product_id)


def product_infos_get(*, product_ids: list[int]) -> dict[int, ProductInfo]:
    """Active products' catalog facts: this process's copies, then one Redis round trip, then one query."""
    ids = list(dict.fromkeys(product_ids))
    if not ids:
        return {}
    generation = _process_catalog.current()
    out, missing = _process_catalog.lookup(generation, ids)
    if missing:
        loaded = _shared_infos_get(missing)
        _process_catalog.keep(generation, loaded)
        out.update(loaded)
    return {pid: info for pid, info in out.items() if info is not None and info.active}


def _shared_infos_get(ids: list[int]) -> dict[int, ProductInfo | None]:
    """From the shared Redis cache, the misses from the database (``None`` for unknown products)."""
    keys = {_cache_key(pid): pid for pid in ids}
    try:
        found = cache.get_many(list(keys))
    except Exception:  # noqa: BLE001
        found = {}
    out: dict[int, ProductInfo | None] = {}
    missing = []
    for key, pid in keys.items():
        if key in found:
            out[pid] = ProductInfo(**found[key]) if found[key] else None
        else:
            missing.append(pid)
    if missing:
        fresh = {p.id: _to_info(p) for p in Product.objects.filter(id__in=missing)}
        out.update({pid: fresh.get(pid) for pid in missing})
        try:
            cache.set_many(
                {_cache_key(pid): (asdict(fresh[pid]) if pid in fresh else {}) for pid in missing},
                timeout=settings.CARTFLOW_CATALOG_CACHE_SECONDS,
            )
        except Exception:  # noqa: BLE001
            pass
    return out


def product_cache_invalidate(*, product_id: int) -> None:
    """After any change to a product: drop its shared entry and bump the generation (every process)."""
    _process_catalog.forget()
    try:
        cache.delete(_cache_key(product_id))
        get_redis_connection("default").set(cache.make_key(GENERATION_KEY), secrets.token_hex(8))
    except Exception:  # noqa: BLE001
        pass


def stock_available(*, product_id: int) -> int:
    # Every cart add calls this: one plain statement instead of an ORM query (whose compilation was
    # about a tenth of a cart write's CPU in the profile). Stock.product is one-to-one, so no ORDER BY.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT on_hand - reserved FROM {Stock._meta.db_table} WHERE product_id = %s",  # noqa: S608
            [product_id],
        )
        row = cursor.fetchone()
    return max(0, row[0]) if row else 0


def stock_available_many(*, product_ids: list[int]) -> dict[int, int]:
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
    qs = Reservation.objects.filter(holder=holder).order_by("product_id")
    if product_ids is not None:
        qs = qs.filter(product_id__in=list(product_ids))
    return [
        ReservationInfo(holder=holder, product_id=pid, quantity=q, status=status, expires_at=expires_at)
        for pid, q, status, expires_at in qs.values_list("product_id", "quantity", "status", "expires_at")
    ]


@dataclass(frozen=True)
class ReservationRow:
    """One reservation as staff see it on an order's page (plain data: no model crosses into orders)."""

    product_id: int
    sku: str
    quantity: int
    status: str
    expires_at: datetime
    updated_at: datetime


def reservations_of_holder(*, holder: str, limit: int = 50) -> tuple[list[ReservationRow], int]:
    """The first ``limit`` reservations of one holder (a checkout id), in product-id order, and how many it has
    in all. One query, and a count only when the rows fill ``limit``."""
    qs = Reservation.objects.filter(holder=holder).order_by("product_id")
    values = qs.values_list("product_id", "product__sku", "quantity", "status", "expires_at", "updated_at")
    rows = [ReservationRow(*row) for row in values[:limit]]
    return rows, (qs.count() if len(rows) == limit else len(rows))
