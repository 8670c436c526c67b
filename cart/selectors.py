"""Cart reads for the API: the snapshot joined with catalog names and prices (never the client's)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cart import store
from cart.services import CartSnapshot, cart_snapshot
from inventory.selectors import product_infos_get


@dataclass(frozen=True)
class CartItemView:
    product_id: int
    sku: str
    name: str
    quantity: int
    unit_price: int
    line_total: int


@dataclass(frozen=True)
class CartView:
    token: str | None
    items: tuple[CartItemView, ...]
    item_count: int
    subtotal: int
    currency: str | None
    version: int
    expires_at: datetime | None


def cart_view_get(*, key: str, token: str | None) -> CartView:
    """The cart as the storefront shows it. Reading pushes the expiry forward.

    Lines whose product has since been deactivated are left out (checkout re-checks the catalog anyway).
    """
    snapshot = cart_snapshot(key=key)
    return cart_view_build(snapshot=snapshot, token=token)


def cart_view_empty(*, token: str | None) -> CartView:
    return CartView(token=token, items=(), item_count=0, subtotal=0, currency=None, version=0, expires_at=None)


def cart_view_build(*, snapshot: CartSnapshot, token: str | None) -> CartView:
    infos = product_infos_get(product_ids=[line.product_id for line in snapshot.lines])
    items = tuple(
        CartItemView(
            product_id=line.product_id,
            sku=infos[line.product_id].sku,
            name=infos[line.product_id].name,
            quantity=line.quantity,
            unit_price=infos[line.product_id].price,
            line_total=infos[line.product_id].price * line.quantity,
        )
        for line in snapshot.lines
        if line.product_id in infos
    )
    exists = snapshot.version > 0
    expires_at = datetime.now(UTC) + timedelta(seconds=store.ttl_seconds(snapshot.key)) if exists else None
    return CartView(
        token=token,
        items=items,
        item_count=sum(item.quantity for item in items),
        subtotal=sum(item.line_total for item in items),
        currency=snapshot.currency if items else None,
        version=snapshot.version,
        expires_at=expires_at,
    )
