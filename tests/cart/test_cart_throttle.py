"""Cart writes are throttled per client (scope cart_write, counted in Redis); reads are not."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.cart.conftest import add, adopt_token

pytestmark = pytest.mark.django_db


def test_writes_beyond_the_rate_get_429_and_change_nothing(product, settings):
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {**rest["DEFAULT_THROTTLE_RATES"], "cart_write": "3/min"}
    settings.REST_FRAMEWORK = rest
    guest = APIClient()
    adopt_token(guest, add(guest, product.id))
    assert add(guest, product.id).status_code == 201
    assert guest.put(f"/api/cart/items/{product.id}", {"quantity": 5}, format="json").status_code == 200
    before = guest.get("/api/cart").json()
    resp = add(guest, product.id)
    assert resp.status_code == 429
    assert resp.json()["code"] == "rate_limited"
    assert 1 <= int(resp["Retry-After"]) <= 60
    assert guest.delete("/api/cart").status_code == 429
    for _ in range(5):
        assert guest.get("/api/cart").status_code == 200
    after = guest.get("/api/cart").json()
    assert after["items"] == before["items"] and after["version"] == before["version"] == 3
