"""A storefront on another origin calls /api from a browser (docs/api.md, "Clients, proxies and browsers"):
the origins of CARTFLOW_CORS_ALLOWED_ORIGINS, with credentials, and the headers scripts need to read."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.support.saga import make_product

pytestmark = pytest.mark.django_db
SHOP = "https://shop.example.com"
EXPOSED = {"x-cart-token", "etag", "x-request-id", "idempotent-replayed", "retry-after"}


@pytest.fixture(autouse=True)
def _shop_origin(settings):
    settings.CORS_ALLOWED_ORIGINS = [SHOP]


def test_a_preflight_from_the_shop_allows_the_api_headers_with_credentials():
    response = APIClient().options(
        "/api/cart/items",
        HTTP_ORIGIN=SHOP,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type, x-cart-token, idempotency-key, if-match, authorization",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == SHOP
    assert response["Access-Control-Allow-Credentials"] == "true"
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "x-cart-token", "idempotency-key", "if-match", "authorization", "flash-ticket"} <= allowed
    assert "POST" in response["Access-Control-Allow-Methods"]


def test_a_cart_write_from_the_shop_exposes_the_token_and_the_etag():
    product = make_product()
    response = APIClient().post(
        "/api/cart/items", {"productId": product.id, "quantity": 1}, format="json", HTTP_ORIGIN=SHOP
    )
    assert response.status_code == 201
    assert response["Access-Control-Allow-Origin"] == SHOP
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert {h.strip().lower() for h in response["Access-Control-Expose-Headers"].split(",")} == EXPOSED
    assert response["X-Cart-Token"] and response["ETag"]


def test_problems_carry_cors_headers_too_so_scripts_can_read_them():
    response = APIClient().post(
        "/api/cart/items", "x" * (2 * 1024 * 1024), content_type="application/json", HTTP_ORIGIN=SHOP
    )
    assert response.status_code == 413
    assert response["Access-Control-Allow-Origin"] == SHOP


def test_other_origins_and_other_paths_get_no_cors_headers():
    stranger = APIClient().get("/api/products", HTTP_ORIGIN="https://evil.example")
    assert stranger.status_code == 200 and "Access-Control-Allow-Origin" not in stranger
    admin = APIClient().get("/admin/login/", HTTP_ORIGIN=SHOP)
    assert "Access-Control-Allow-Origin" not in admin


def test_no_origin_is_allowed_unless_configured(settings):
    settings.CORS_ALLOWED_ORIGINS = []
    response = APIClient().get("/api/products", HTTP_ORIGIN=SHOP)
    assert "Access-Control-Allow-Origin" not in response


def test_the_origins_come_from_the_environment():
    from tests.cartflow.test_servicefinder import _settings_probe

    out = _settings_probe(
        "print(settings.CORS_ALLOWED_ORIGINS, settings.CSRF_TRUSTED_ORIGINS)",
        DJANGO_SECRET_KEY="x",
        CARTFLOW_CORS_ALLOWED_ORIGINS="https://shop.example.com, http://localhost:3000",
    )
    assert out.returncode == 0, out.stderr
    origins = "['https://shop.example.com', 'http://localhost:3000']"
    assert out.stdout.strip() == f"{origins} {origins}"
