"""Regressions found by the fault campaign (`make chaos`, bench/chaos.py)."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from tests.support.saga import guest_with_cart, make_product

pytestmark = pytest.mark.django_db(transaction=True)


def test_redis_outage_mid_checkout_is_a_retryable_503_not_a_500(settings, spare_redis):
    """With Redis stopped, checkout/start used to leave as 500 internal_error (the throttle's cache call
    raised ConnectionInterrupted); a storefront must see 503 service_unavailable with Retry-After."""
    product = make_product()
    client = guest_with_cart((product, 1))
    caches = {"default": {**settings.CACHES["default"], "LOCATION": spare_redis.url}}
    with override_settings(CACHES=caches):
        APIClient().get("/healthz")
        spare_redis.stop()
        response = client.post("/api/checkout/start", {}, format="json")
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["code"] == "service_unavailable" and response["Retry-After"]
    assert "Traceback" not in response.content.decode()


def test_unknown_api_path_with_a_cookie_and_an_unsafe_method_is_a_404_problem():
    """Found by the schema fuzzer: DELETE /api/cart/items/null,null with a cookie got CSRF's HTML 403."""
    client = APIClient(enforce_csrf_checks=True)
    client.cookies["cart_token"] = "x" * 43
    response = client.delete("/api/cart/items/null,null")
    assert response.status_code == 404, response.content
    assert response["Content-Type"] == "application/problem+json" and response.json()["code"] == "not_found"


def _raised_inside_redis_py(exc: BaseException) -> BaseException:
    """Raise ``exc`` from a frame whose module is redis-py's, as redis-py's ``can_read`` did."""
    code = compile("def can_read(exc):\n    raise exc\n", "redis/connection.py", "exec")
    scope: dict = {"__name__": "redis.connection"}
    exec(code, scope)  # noqa: S102 - a frame that belongs to "redis.connection"
    try:
        scope["can_read"](exc)
    except BaseException as raised:  # noqa: BLE001
        return raised
    raise AssertionError("not raised")


def test_redis_py_index_error_on_a_lost_connection_is_a_503_not_a_500(rf):
    """Chaos run: redis-py raised ``IndexError: pop from empty list`` inside ``can_read`` while Redis
    restarted and the request answered 500. Raised inside redis-py it means "connection lost": 503."""
    from cartflow.exceptions import problem_exception_handler, redis_connection_lost

    lost = _raised_inside_redis_py(IndexError("pop from empty list"))
    assert redis_connection_lost(lost)
    response = problem_exception_handler(lost, {"request": rf.post("/api/checkout/start")})
    assert response.status_code == 503 and response.data["code"] == "service_unavailable"
    assert response["Retry-After"]

    try:  # the same error from our own code is a bug: still a 500
        [].pop()
    except IndexError as ours:
        assert not redis_connection_lost(ours)
        response = problem_exception_handler(ours, {"request": rf.post("/api/checkout/start")})
        assert response.status_code == 500 and response.data["code"] == "internal_error"


def test_redis_py_index_error_in_a_cart_call_is_cart_unavailable():
    """The cart's own mapping (cart/store.py) answers the same failure as 503 ``cart_unavailable``."""
    from cart.errors import CartUnavailable
    from cart.store import unavailable_on_redis_error

    with pytest.raises(CartUnavailable) as caught, unavailable_on_redis_error():
        raise _raised_inside_redis_py(IndexError("pop from empty list"))
    assert caught.value.code == "cart_unavailable" and caught.value.retry_after == 1
    with pytest.raises(IndexError), unavailable_on_redis_error():
        [].pop()
