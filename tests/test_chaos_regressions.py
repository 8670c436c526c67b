"""Regressions found by the fault campaign (`make chaos`, bench/chaos.py)."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from tests.saga_support import guest_with_cart, make_product

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
