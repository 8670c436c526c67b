"""Cart fixtures: catalog rows in the real PostgreSQL, carts in the real Redis (flushed per test)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from inventory.models import Product, Stock

_skus = itertools.count(1)


@pytest.fixture
def make_product(db) -> Callable[..., Product]:  # noqa: ANN001 - pytest-django's fixture
    def make(*, price: int = 1250, currency: str = "usd", on_hand: int = 50, active: bool = True) -> Product:
        product = Product.objects.create(
            sku=f"SKU-{next(_skus):05d}", name="Thing", price=price, currency=currency, active=active
        )
        Stock.objects.create(product=product, on_hand=on_hand)
        return product

    return make


@pytest.fixture
def product(make_product) -> Product:  # noqa: ANN001
    return make_product()


@pytest.fixture
def guest() -> APIClient:
    """A guest client that keeps its cart token as a header (like a mobile app would)."""
    return APIClient()


def add(client: APIClient, product_id: int, quantity: int = 1, **headers: str):
    return client.post(
        "/api/cart/items", {"productId": product_id, "quantity": quantity}, format="json", headers=headers
    )


def adopt_token(client: APIClient, response) -> str:  # noqa: ANN001
    """Send the token from ``response`` with every later request of ``client``."""
    token = response.json()["token"]
    client.credentials(HTTP_X_CART_TOKEN=token)
    return token
