"""The cart body is built without DRF's per-request field copies; it must stay what the serializer says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cart.apis import CartOutputSerializer, cart_payload
from cart.selectors import CartItemView, CartView, cart_view_empty

_ITEMS = (
    CartItemView(product_id=1, sku="TS-1", name="T-shirt", quantity=2, unit_price=2500, line_total=5000),
    CartItemView(product_id=7, sku="MUG", name="Mug ☕", quantity=1, unit_price=900, line_total=900),
)


@pytest.mark.parametrize(
    "view",
    [
        CartView(
            token="tok",
            items=_ITEMS,
            item_count=3,
            subtotal=5900,
            currency="usd",
            version=4,
            expires_at=datetime(2026, 11, 24, 15, 0, 1, 123456, tzinfo=UTC),
        ),
        CartView(
            token=None,
            items=_ITEMS[:1],
            item_count=2,
            subtotal=5000,
            currency="eur",
            version=1,
            expires_at=datetime(2027, 1, 1, tzinfo=UTC),
        ),
        cart_view_empty(token=None),
        cart_view_empty(token="t2"),
    ],
    ids=["guest-two-lines", "user-one-line", "empty", "empty-with-token"],
)
def test_cart_payload_equals_the_output_serializer(view: CartView) -> None:
    expected = CartOutputSerializer(view).data
    payload = cart_payload(view)
    assert payload == expected
    assert list(payload) == list(expected)
