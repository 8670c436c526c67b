"""Cart writes are throttled per client (scope cart_write, counted in Redis); reads are not."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.cart.conftest import add, adopt_token

pytestmark = pytest.mark.django_db


def test_writes_beyond_the_rate_get_429_and_change_nothing(product, settings, fresh_throttle_window):
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {**rest["DEFAULT_THROTTLE_RATES"], "cart_write": "3/min"}
    settings.REST_FRAMEWORK = rest
    guest = APIClient()
    adopt_token(guest, add(guest, product.id))  # starts the cart: counted against the address
    assert add(guest, product.id).status_code == 201  # from here on counted against the cart token
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
    assert after["items"] == before["items"] and after["version"] == before["version"] == 4


@pytest.mark.django_db
def test_sign_in_attempts_beyond_the_rate_get_429_with_retry_after(settings, django_user_model, fresh_throttle_window):
    """Password guessing is slowed per client address: the attempt after the limit is refused unread."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "sign_in": "3/min"},
    }
    django_user_model.objects.create_user(username="ann", password="right-horse-battery")
    client = APIClient()
    codes = [
        client.post("/api/auth/token", {"username": "ann", "password": "wrong"}, format="json").status_code
        for _ in range(3)
    ]
    assert codes == [401, 401, 401]
    refused = client.post("/api/auth/token", {"username": "ann", "password": "right-horse-battery"}, format="json")
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused["Retry-After"]) >= 1
    assert "token" not in refused.json()
