"""Bad input is never a 500 (docs/api.md, "Clients, proxies and browsers"): oversized bodies, JSON nested
too deep, NUL bytes in path ids, requests Django itself refuses; and logged tracebacks carry no locals.

The module doubles as a test-only URLConf: the project's routes plus plain Django views under /api that
refuse on purpose (PermissionDenied, a CSRF-protected write).
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys

import pytest
import structlog
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.test import Client
from django.urls import include, path
from rest_framework.test import APIClient

from cartflow.logconfig import logging_dict
from tests.cartflow.test_problems import assert_problem
from tests.support.saga import make_product


def _forbidden(request):  # noqa: ANN001, ANN202 - a plain Django view: handler403 answers
    raise PermissionDenied


def _csrf_protected(request):  # noqa: ANN001, ANN202 - a plain Django view without csrf_exempt
    return HttpResponse("written")


urlpatterns = [
    path("api/_test/forbidden", _forbidden),
    path("api/_test/csrf", _csrf_protected),
    path("", include("cartflow.urls")),
]
handler400 = "cartflow.exceptions.api_400"
handler403 = "cartflow.exceptions.api_403"
handler404 = "cartflow.exceptions.api_404"
handler500 = "cartflow.exceptions.api_500"

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]
MIB = 1024 * 1024


@pytest.fixture
def client() -> APIClient:
    return APIClient(raise_request_exception=False)


@pytest.fixture
def shopper(client) -> APIClient:  # noqa: ANN001
    """A guest with a cart, so that a path id reaches a database query."""
    product = make_product()
    response = client.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json")
    client.credentials(HTTP_X_CART_TOKEN=response.json()["token"])
    return client


# --- bodies ---


@pytest.mark.parametrize("url", ["/api/cart/items", "/api/checkout/start", "/api/auth/token", "/api/webhooks/stripe"])
def test_a_body_over_the_default_limit_is_413_payload_too_large(client, url):
    body = assert_problem(client.post(url, "x" * 3 * MIB, content_type="application/json"), 413, "payload_too_large")
    assert body["limit"] == MIB


def test_the_webhook_refuses_a_large_body_before_checking_its_signature(client, settings):
    settings.CARTFLOW_MAX_BODY_BYTES = 1000
    signed = client.post(
        "/api/webhooks/stripe",
        "{" + " " * 2000 + "}",
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE="t=1,v1=00",
    )
    assert_problem(signed, 413, "payload_too_large")
    unsigned = client.post("/api/webhooks/stripe", "{" + " " * 2000 + "}", content_type="application/json")
    assert_problem(unsigned, 413, "payload_too_large")
    assert_problem(
        client.post("/api/webhooks/stripe", "{}", content_type="application/json"), 400, "webhook_signature_invalid"
    )


def test_the_limit_is_the_setting(client, settings):
    settings.CARTFLOW_MAX_BODY_BYTES = 100
    small = json.dumps({"productId": 1, "quantity": 1, "pad": "x" * 40})
    assert client.post("/api/cart/items", small, content_type="application/json").status_code != 413
    large = json.dumps({"productId": 1, "quantity": 1, "pad": "x" * 100})
    assert (
        assert_problem(
            client.post("/api/cart/items", large, content_type="application/json"), 413, "payload_too_large"
        )["limit"]
        == 100
    )


@pytest.mark.parametrize("depth", [100_000, 33])
def test_json_nested_too_deep_is_400_malformed_json(client, depth):
    deep = "[" * depth + "]" * depth
    body = assert_problem(client.post("/api/cart/items", deep, content_type="application/json"), 400, "malformed_json")
    assert "nested deeper than 32" in body["detail"]
    deep_object = '{"a":' * depth + "1" + "}" * depth
    assert_problem(client.post("/api/auth/token", deep_object, content_type="application/json"), 400, "malformed_json")


def test_json_the_api_can_read_is_not_refused_for_depth(client):
    nested = {"productId": 1, "quantity": 1, "x": [[[{"y": [1]}]]]}
    assert client.post("/api/cart/items", nested, format="json").status_code == 404  # product 1 does not exist


def test_a_form_body_gets_415_saying_to_send_json(client):
    body = assert_problem(
        client.post("/api/cart/items", "productId=1&quantity=1", content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    )
    assert "Send the body as JSON" in body["detail"] and "Content-Type: application/json" in body["detail"]


# --- path ids ---


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/orders/%00"),
        ("get", "/api/orders/ord_%00x"),
        ("get", "/api/checkout/%00"),
        ("post", "/api/checkout/%00/cancel"),
        ("post", "/api/checkout/chk_%00/payment-intent"),
        ("post", "/api/flash-sales/%00/queue"),
        ("get", "/api/flash-sales/SKU/queue/%00"),
        ("get", "/api/orders/%0A"),
        ("get", "/admin/orders/order/%00/change/"),
    ],
)
def test_a_nul_or_control_character_in_a_path_id_is_404(shopper, method, url):
    assert_problem(getattr(shopper, method)(url), 404, "not_found")


# --- where Django answers ---


def test_a_host_this_server_does_not_serve_is_a_400_problem(client):
    assert_problem(client.get("/api/products", HTTP_HOST="evil.example"), 400, "bad_request")


def test_permission_denied_outside_drf_is_a_403_problem(client):
    assert_problem(client.get("/api/_test/forbidden"), 403, "permission_denied")


def test_a_csrf_failure_on_an_api_path_is_a_403_problem():
    browser = Client(enforce_csrf_checks=True)
    body = assert_problem(browser.post("/api/_test/csrf", {}), 403, "permission_denied")
    assert "CSRF" in body["detail"]
    assert browser.post("/admin/login/", {}).status_code == 403  # outside /api: Django's own page
    assert "html" in browser.post("/admin/login/", {})["Content-Type"]


# --- logs ---


def _secret_holder():  # noqa: ANN202
    card_number = "-".join(["4242"] * 4)  # a local a traceback must not show (built, so no source line shows it)
    raise RuntimeError(f"failed after {len(card_number)} characters")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_logged_tracebacks_carry_no_frame_locals(fmt):
    spec = logging_dict(fmt=fmt)["formatters"]["structlog"]
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=spec["processors"], foreign_pre_chain=spec["foreign_pre_chain"]
    )
    handler = logging.StreamHandler(buf := io.StringIO())
    handler.setFormatter(formatter)
    logger = logging.getLogger("tests.bad_input")
    logger.addHandler(handler)
    try:
        try:
            _secret_holder()
        except RuntimeError:
            logger.error("boom", exc_info=sys.exc_info())
    finally:
        logger.removeHandler(handler)
    text = re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue())  # the console renderer's colours
    assert "_secret_holder" in text and "failed after 19 characters" in text  # the traceback is there ...
    assert "4242-4242-4242-4242" not in text  # ... without the frame's locals
