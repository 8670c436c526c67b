"""Sliding expiry against the real Redis: reads and writes push it forward; an idle cart disappears."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from rest_framework.test import APIClient

from cart.identity import token_hash
from tests.cart.conftest import add, adopt_token

pytestmark = pytest.mark.django_db


def _pttl(redis_client, token: str) -> int:  # noqa: ANN001
    return redis_client.pttl("cart:{t:" + token_hash(token) + "}")


def _key(token: str) -> str:
    return "cart:{t:" + token_hash(token) + "}"


def _let_time_pass(redis_client, token: str, *, left_ms: int) -> None:  # noqa: ANN001
    """What time does to the cart in Redis: only ``left_ms`` of its window remain (no sleeping across a TTL)."""
    assert redis_client.pexpire(_key(token), left_ms)


def _wait_until_gone(redis_client, token: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + 10
    while redis_client.exists(_key(token)):
        assert time.monotonic() < deadline, "Redis did not expire the cart"
        time.sleep(0.01)


def test_reads_and_writes_push_expiry_forward_and_an_idle_cart_is_gone(product, redis_client, settings):
    settings.CARTFLOW_CART_TTL_SECONDS = 30
    guest = APIClient()
    first = add(guest, product.id)
    token = adopt_token(guest, first)
    expires_1 = datetime.fromisoformat(first.json()["expiresAt"])
    assert 29_000 < _pttl(redis_client, token) <= 30_000

    _let_time_pass(redis_client, token, left_ms=5_000)  # 25 s later
    read = guest.get("/api/cart")
    assert read.json()["itemCount"] == 1
    assert datetime.fromisoformat(read.json()["expiresAt"]) >= expires_1
    assert _pttl(redis_client, token) > 29_000  # the read restarted the clock

    _let_time_pass(redis_client, token, left_ms=5_000)  # past the first window: alive only because of the read
    write = add(guest, product.id)
    assert write.json()["itemCount"] == 2
    assert _pttl(redis_client, token) > 29_000  # the write slid it again

    _let_time_pass(redis_client, token, left_ms=1)  # idle to the end of its window
    _wait_until_gone(redis_client, token)
    gone = guest.get("/api/cart").json()
    assert (gone["items"], gone["version"], gone["expiresAt"]) == ([], 0, None)
    assert _pttl(redis_client, token) == -2
    # Writing with the expired token starts a new cart under a new token.
    fresh = add(guest, product.id)
    assert fresh.json()["token"] != token and fresh.json()["version"] == 1


def test_signed_in_carts_use_the_user_ttl(product, redis_client, settings, django_user_model):
    settings.CARTFLOW_CART_TTL_SECONDS = 60
    settings.CARTFLOW_USER_CART_TTL_SECONDS = 3600
    user = django_user_model.objects.create_user(username="kay", password="x")
    client = APIClient()
    client.force_authenticate(user)
    add(client, product.id)
    assert 3500_000 < redis_client.pttl(f"cart:{{u:{user.pk}}}") <= 3600_000
    guest = APIClient()
    token = adopt_token(guest, add(guest, product.id))
    assert 50_000 < _pttl(redis_client, token) <= 60_000
