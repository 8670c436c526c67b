"""Cart writes (and the snapshot the checkout saga reads). Each write is one Lua script in cart/store.py.

Catalog facts (currency, active) and available stock are read from inventory's selectors before the
script runs and handed to it as arguments; the script decides atomically against the cart as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from cart import store
from cart.errors import CartMissing, CartValidationError, CartVersionConflict, CurrencyMismatch
from inventory.errors import InsufficientStock, ProductNotFound
from inventory.selectors import ProductInfo, product_infos_get, stock_available


@dataclass(frozen=True)
class CartLine:
    product_id: int
    quantity: int


@dataclass(frozen=True)
class CartSnapshot:
    """A cart as it is in Redis now: lines sorted by product id; version 0 means no cart exists."""

    key: str
    lines: tuple[CartLine, ...]
    version: int
    currency: str | None


def cart_snapshot(*, key: str) -> CartSnapshot:
    """Read a cart (pushing its expiry forward). An unknown or expired cart is an empty one."""
    return _snapshot(key, store.read(key))


def _snapshot(key: str, raw: dict[bytes, bytes]) -> CartSnapshot:
    lines = tuple(
        sorted(
            (CartLine(product_id=int(f), quantity=int(q)) for f, q in raw.items() if f not in store.META_FIELDS),
            key=lambda line: line.product_id,
        )
    )
    currency = raw.get(b"currency")
    return CartSnapshot(
        key=key,
        lines=lines,
        version=int(raw.get(b"version", 0)),
        currency=currency.decode() if currency else None,
    )


def cart_clear(*, key: str, if_version: int | None = None) -> bool:
    """Empty a cart (after a checkout). With ``if_version``, only while the cart is still at that version.

    Returns whether lines were removed; a cart changed since ``if_version`` is left alone (False).
    """
    status, _version, cleared = store.run("clear", keys=[store.redis_key(key)], args=_clear_args(key, if_version))
    return status == "ok" and int(cleared) == 1


def cart_delete(*, key: str, if_match: int | None = None) -> int:
    """``DELETE /api/cart``: empty the cart; a stale ``if_match`` is refused. Returns the new version."""
    status, version, _cleared = store.run("clear", keys=[store.redis_key(key)], args=_clear_args(key, if_match))
    if status == "conflict":
        raise _conflict(int(version))
    return int(version)


def cart_item_add(
    *, key: str, product_id: int, quantity: int, if_match: int | None = None, must_exist: bool = False
) -> CartSnapshot:
    """Add ``quantity`` units to the product's line (creating it). Returns the cart as written.

    ``must_exist``: the caller named an existing guest cart; when it is gone, :class:`CartMissing` is
    raised so the caller can start a new cart under a new token.
    """
    return _upsert(
        key=key, product_id=product_id, quantity=quantity, if_match=if_match, must_exist=must_exist, mode="add"
    )


def cart_item_set(
    *, key: str, product_id: int, quantity: int, if_match: int | None = None, must_exist: bool = False
) -> CartSnapshot:
    """Set the product's line to ``quantity``; 0 removes it. Returns the cart as written."""
    if quantity == 0:
        cart_item_remove(key=key, product_id=product_id, if_match=if_match)
        return cart_snapshot(key=key)
    return _upsert(
        key=key, product_id=product_id, quantity=quantity, if_match=if_match, must_exist=must_exist, mode="set"
    )


def cart_item_remove(*, key: str, product_id: int, if_match: int | None = None) -> int:
    """Remove the product's line (absent already: nothing changes). Returns the version."""
    args = ["" if if_match is None else if_match, store.ttl_seconds(key) * 1000, product_id]
    status, version = store.run("remove", keys=[store.redis_key(key)], args=args)
    if status == "conflict":
        raise _conflict(int(version))
    return int(version)


def cart_merge(*, user_id: int, token_hash: str) -> int:
    """Move a guest cart's lines into the user's cart (quantities added, capped per line) and delete it.

    One script: atomic, and idempotent (a guest cart already merged is gone, so nothing changes).
    Returns the user's cart version.
    """
    user_key = f"u:{user_id}"
    max_line = int(settings.CARTFLOW_MAX_LINE_QUANTITY)
    max_lines = int(settings.CARTFLOW_MAX_CART_LINES)
    result = store.run(
        "merge",
        keys=[store.redis_key(user_key), store.redis_key(f"t:{token_hash}")],
        args=[store.ttl_seconds(user_key) * 1000, max_line, max_lines],
    )
    status = result[0]
    if status == "currency":
        raise CurrencyMismatch(
            f"The guest cart is in {result[2]} but your cart is in {result[1]}.",
            cartCurrency=result[1],
            productCurrency=result[2],
        )
    if status == "too_many_lines":
        raise CartValidationError(
            field="token", code="max_lines", detail=f"The merged cart would have more than {max_lines} lines."
        )
    return int(result[1])


def _upsert(
    *, key: str, product_id: int, quantity: int, if_match: int | None, must_exist: bool, mode: str
) -> CartSnapshot:
    max_line = int(settings.CARTFLOW_MAX_LINE_QUANTITY)
    max_lines = int(settings.CARTFLOW_MAX_CART_LINES)
    _check_quantity(quantity, max_line)
    product = _product(product_id)
    available = stock_available(product_id=product_id)
    args = [
        "" if if_match is None else if_match,
        store.ttl_seconds(key) * 1000,
        product_id,
        quantity,
        product.currency,
        max_line,
        max_lines,
        available,
        "1" if must_exist else "0",
        mode,
    ]
    status, n, *written = store.run("upsert", keys=[store.redis_key(key)], args=args)
    if status == "ok":
        return _snapshot(key, store.as_hash(written[0]))
    if status == "missing":
        raise CartMissing(key)
    if status == "conflict":
        raise _conflict(n)
    if status == "currency":
        raise CurrencyMismatch(
            f"This cart holds {n} products; product {product_id} is priced in {product.currency}.",
            productId=product_id,
            cartCurrency=n,
            productCurrency=product.currency,
        )
    if status == "too_many_lines":
        raise CartValidationError(
            field="productId", code="max_lines", detail=f"A cart holds at most {max_lines} different products."
        )
    if status == "line_max":
        raise CartValidationError(
            field="quantity",
            code="max_value",
            detail=f"A line holds at most {max_line} units; this one has {n}.",
        )
    if status == "stock":
        raise InsufficientStock(
            f"Only {available} units of product {product_id} are available.", productId=product_id, available=available
        )
    raise RuntimeError(f"unexpected cart script status {status!r}")


def _check_quantity(quantity: int, max_line: int) -> None:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise CartValidationError(field="quantity", code="min_value", detail="Ensure this value is at least 1.")
    if quantity > max_line:
        raise CartValidationError(
            field="quantity", code="max_value", detail=f"Ensure this value is at most {max_line}."
        )


def _product(product_id: int) -> ProductInfo:
    product = product_infos_get(product_ids=[product_id]).get(product_id)
    if product is None:
        raise ProductNotFound(f"No active product has id {product_id}.", productId=product_id)
    return product


def _conflict(current: int) -> CartVersionConflict:
    return CartVersionConflict(f"The cart is at version {current}; reload it and try again.", currentVersion=current)


def _clear_args(key: str, if_version: int | None) -> list[object]:
    return ["" if if_version is None else if_version, store.ttl_seconds(key) * 1000]
