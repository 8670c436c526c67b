"""Concurrent writers on one cart, each on its own thread and DB connection, through real HTTP handling."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from cart.identity import token_hash
from cart.services import cart_merge, cart_snapshot
from tests.cart.conftest import add, adopt_token
from tests.support.threads import race

pytestmark = pytest.mark.django_db(transaction=True)


def test_forty_concurrent_adds_to_one_cart_all_count(make_product):
    a, b = make_product(on_hand=1000), make_product(on_hand=1000)
    owner = APIClient()
    token = adopt_token(owner, add(owner, a.id, 1))

    def one_add(i: int) -> int:
        client = APIClient()
        client.credentials(HTTP_X_CART_TOKEN=token)
        return add(client, a.id if i % 2 else b.id, 2).status_code

    statuses = race(40, one_add)
    assert statuses == [201] * 40
    body = owner.get("/api/cart").json()
    assert {i["productId"]: i["quantity"] for i in body["items"]} == {a.id: 1 + 20 * 2, b.id: 20 * 2}
    assert body["version"] == 41


def test_concurrent_if_match_writers_exactly_one_wins(product):
    owner = APIClient()
    token = adopt_token(owner, add(owner, product.id, 1))

    def put(i: int) -> int:
        client = APIClient()
        client.credentials(HTTP_X_CART_TOKEN=token)
        resp = client.put(
            f"/api/cart/items/{product.id}", {"quantity": 2 + i}, format="json", headers={"If-Match": '"1"'}
        )
        return resp.status_code

    statuses = race(12, put)
    assert sorted(statuses) == [200] + [412] * 11
    assert owner.get("/api/cart").json()["version"] == 2


def test_concurrent_merges_of_one_guest_cart_count_once(make_product):
    a = make_product(on_hand=1000)
    user = get_user_model().objects.create_user(username="grace", password="x")
    guest = APIClient()
    token = adopt_token(guest, add(guest, a.id, 3))
    results = race(10, lambda i: cart_merge(user_id=user.pk, token_hash=token_hash(token)))
    assert all(isinstance(r, int) for r in results), results
    snapshot = cart_snapshot(key=f"u:{user.pk}")
    assert [(line.product_id, line.quantity) for line in snapshot.lines] == [(a.id, 3)]
    assert snapshot.version == 1
    assert cart_snapshot(key="t:" + token_hash(token)).lines == ()
