"""Checkout HTTP API: start, confirm, decline, 3-D Secure, read scoping, cancel, Idempotency-Key."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from orders.apis import CheckoutOutputSerializer, checkout_start_body
from orders.models import CheckoutSaga, Order
from orders.selectors import checkout_view
from orders.services import outbox_process_pending
from tests.support.saga import (
    charges,
    guest_with_cart,
    held,
    invariants_hold,
    make_product,
    refunds,
    stock,
    stripe_request_counter,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _start(client: APIClient, **headers: str):
    return client.post("/api/checkout/start", {}, format="json", headers=headers)


def _confirm(client: APIClient, checkout_id: str | None = None, pm: str = "pm_card_visa", **headers: str):
    body = {"paymentMethodId": pm}
    if checkout_id:
        body["checkoutId"] = checkout_id
    return client.post("/api/checkout/confirm", body, format="json", headers=headers)


def test_start_reserves_prices_from_catalog_and_makes_no_stripe_call(stripe_emulator):
    a, b = make_product(price=1000), make_product(price=250)
    client = guest_with_cart((a, 2), (b, 3))
    stripe_requests = stripe_request_counter(stripe_emulator)
    response = _start(client)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "awaiting_payment"
    assert body["amount"] == 2 * 1000 + 3 * 250 and body["currency"] == "usd"
    assert body["checkoutId"].startswith("chk_") and body["orderId"].startswith("ord_")
    assert body["paymentClientSecret"] is None  # the deferred-intent flow: no PaymentIntent yet
    assert {(line["productId"], line["quantity"], line["lineTotal"]) for line in body["lines"]} == {
        (a.id, 2, 2000),
        (b.id, 3, 750),
    }
    assert stock(a) == (10, 2) and stock(b) == (10, 3)

    again = _start(client)
    assert again.status_code == 200 and again.json()["checkoutId"] == body["checkoutId"]
    assert stock(a) == (10, 2)  # never a second reservation
    assert stripe_requests() == 0 and stripe_emulator.events() == []
    assert Order.objects.get(public_id=body["orderId"]).payment_intent_id == ""


def test_full_flow_confirms_fulfils_and_clears_the_cart(stripe_emulator):
    product = make_product(price=1999)
    client = guest_with_cart((product, 2))
    start = _start(client).json()
    response = _confirm(client)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "confirmed"
    assert stock(product) == (8, 0)
    assert outbox_process_pending() == 1
    assert outbox_process_pending() == 0  # consumed once
    detail = client.get(f"/api/checkout/{start['checkoutId']}").json()
    assert detail["status"] == "fulfilled"
    assert [s["name"] for s in detail["steps"] if s["status"] == "done"] == [
        "start",
        "reserve",
        "create_order",
        "charge",
        "confirm",
        "fulfil",
    ]
    order = client.get(f"/api/orders/{start['orderId']}").json()
    assert order["status"] == "fulfilled" and order["paymentStatus"] == "paid" and order["total"] == 3998
    assert client.get("/api/cart").json()["items"] == []
    assert charges(stripe_emulator) == 1
    invariants_hold()


def test_insufficient_stock_is_409_and_holds_nothing(stripe_emulator):
    product = make_product(on_hand=3)
    first = guest_with_cart((product, 2))
    second = guest_with_cart((product, 2))
    assert _start(first).status_code == 201
    response = _start(second)
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "insufficient_stock" and body["productId"] == product.id and body["available"] == 1
    assert stock(product) == (3, 2)
    failed = CheckoutSaga.objects.get(state="failed")
    assert held(failed.public_id) == 0
    invariants_hold()


def test_decline_keeps_the_checkout_open_then_another_card_succeeds(stripe_emulator):
    product = make_product()
    client = guest_with_cart((product, 1))
    start = _start(client).json()
    declined = _confirm(client, pm="pm_card_chargeDeclined")
    assert declined.status_code == 402
    assert declined.json()["code"] == "payment_declined" and declined.json()["declineCode"] == "generic_decline"
    assert client.get(f"/api/checkout/{start['checkoutId']}").json()["status"] == "awaiting_payment"
    assert stock(product) == (10, 1)
    ok = _confirm(client, start["checkoutId"])
    assert ok.status_code == 200 and ok.json()["status"] == "confirmed"
    assert charges(stripe_emulator) == 1
    invariants_hold()


def test_three_d_secure_finishes_through_the_intent_listener(stripe_emulator):
    from payments.gateway import payment_intent_retrieve
    from payments.hooks import intent_listeners_notify

    product = make_product()
    client = guest_with_cart((product, 1))
    start = _start(client).json()
    response = _confirm(client, pm="pm_card_threeDSecure2Required")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "requires_action" and response.json()["nextAction"]
    saga = CheckoutSaga.objects.get(public_id=start["checkoutId"])
    stripe_emulator.authenticate(saga.payment_intent_id)
    # What the webhook handler does after re-fetching the PaymentIntent:
    intent_listeners_notify(intent=payment_intent_retrieve(intent_id=saga.payment_intent_id), source="webhook")
    assert client.get(f"/api/checkout/{start['checkoutId']}").json()["status"] == "confirmed"
    assert stock(product) == (9, 0)
    # A duplicate delivery changes nothing.
    intent_listeners_notify(intent=payment_intent_retrieve(intent_id=saga.payment_intent_id), source="webhook")
    assert charges(stripe_emulator) == 1 and refunds(stripe_emulator) == 0
    invariants_hold()


def test_a_return_url_makes_three_d_secure_a_redirect_that_comes_back_to_the_storefront(stripe_emulator):
    """The storefront sends returnUrl (Stripe's return_url): 3-D Secure's nextAction is then redirect_to_url, to
    the emulator's challenge page; the attempt keeps it, so a replay of a lost call sends the same parameters."""
    client = guest_with_cart((make_product(), 1))
    start = _start(client).json()
    back = "http://127.0.0.1:8000/shop/?api=http%3A%2F%2F127.0.0.1%3A8000"
    body = {"paymentMethodId": "pm_card_threeDSecure2Required", "returnUrl": back}
    response = client.post("/api/checkout/confirm", body, format="json")
    assert response.status_code == 202, response.content
    action = response.json()["nextAction"]
    assert action["type"] == "redirect_to_url" and action["redirect_to_url"]["return_url"] == back
    saga = CheckoutSaga.objects.get(public_id=start["checkoutId"])
    assert action["redirect_to_url"]["url"] == f"{stripe_emulator.url}/_emulator/3ds/{saga.payment_intent_id}"
    assert saga.charge_params == {"payment_method": "pm_card_threeDSecure2Required", "return_url": back}

    refused = client.post("/api/checkout/confirm", {**body, "returnUrl": "javascript:alert(1)"}, format="json")
    assert refused.status_code == 400 and refused.json()["code"] == "validation_error"
    assert [e["field"] for e in refused.json()["errors"]] == ["returnUrl"]


def test_checkout_and_order_are_visible_only_to_their_cart(stripe_emulator):
    product = make_product()
    owner = guest_with_cart((product, 1))
    start = _start(owner).json()
    stranger = guest_with_cart((product, 1))
    for client, expected in ((owner, 200), (stranger, 404), (APIClient(), 404)):
        assert client.get(f"/api/checkout/{start['checkoutId']}").status_code == expected
        assert client.get(f"/api/orders/{start['orderId']}").status_code == expected
    assert stranger.get(f"/api/orders/{start['orderId']}").json()["code"] == "order_not_found"
    assert stranger.get(f"/api/checkout/{start['checkoutId']}").json()["code"] == "checkout_not_found"
    assert _confirm(stranger, start["checkoutId"]).json()["code"] == "checkout_not_found"


def test_cancel_before_paying_releases_stock_and_costs_stripe_nothing(stripe_emulator):
    product = make_product()
    client = guest_with_cart((product, 4))
    stripe_requests = stripe_request_counter(stripe_emulator)
    start = _start(client).json()
    response = client.post(f"/api/checkout/{start['checkoutId']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert stock(product) == (10, 0)
    assert stripe_requests() == 0  # no intent was created, so there is none to cancel
    assert Order.objects.get(public_id=start["orderId"]).status == "cancelled"
    again = client.post(f"/api/checkout/{start['checkoutId']}/cancel")
    assert again.status_code == 200  # cancelling a cancelled checkout is a no-op
    not_confirmable = _confirm(client, start["checkoutId"])
    assert not_confirmable.status_code == 409
    assert not_confirmable.json()["code"] == "checkout_not_confirmable"
    assert not_confirmable.json()["checkoutStatus"] == "cancelled"
    # A new start for the same cart is a new checkout.
    assert _start(client).status_code == 201
    invariants_hold()


def test_paid_checkout_cannot_be_cancelled(stripe_emulator):
    client = guest_with_cart((make_product(), 1))
    start = _start(client).json()
    assert _confirm(client).status_code == 200
    response = client.post(f"/api/checkout/{start['checkoutId']}/cancel")
    assert response.status_code == 409
    assert response.json()["code"] == "checkout_not_cancellable" and response.json()["checkoutStatus"] == "confirmed"


def test_cart_empty_says_when_no_cart_token_was_sent():
    """The seed card's curl walk-through without a cookie jar: the cart write's token never came back."""
    product = make_product()
    client = APIClient()
    assert client.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json").status_code == 201
    body = _start(APIClient()).json()
    assert (body["status"], body["code"], body["cartTokenSent"]) == (409, "cart_empty", False)
    assert "No cart token was sent" in body["detail"] and "X-Cart-Token" in body["detail"]
    assert CheckoutSaga.objects.count() == 0


def test_cart_empty_says_when_the_token_sent_names_an_empty_cart():
    product = make_product()
    client = APIClient()
    token = client.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json").json()["token"]
    client.credentials(HTTP_X_CART_TOKEN=token)
    assert client.put(f"/api/cart/items/{product.id}", {"quantity": 0}, format="json").status_code == 200
    body = _start(client).json()
    assert (body["code"], body["cartTokenSent"]) == ("cart_empty", True)
    assert "cart token sent is empty" in body["detail"]
    stranger = APIClient()
    stranger.cookies["cart_token"] = "not-a-token-this-server-issued"
    assert _start(stranger).json()["cartTokenSent"] is True


def test_start_body_is_what_the_output_serializer_renders(stripe_emulator):
    """The start answers without CheckoutOutputSerializer (orders/apis.py, ``checkout_start_body``): for a
    checkout in each shape it can take, both give the same JSON, keys in the same order."""
    client = guest_with_cart((make_product(price=999), 2), (make_product(), 1))
    started = _start(client)
    saga = CheckoutSaga.objects.select_related("order").get(public_id=started.json()["checkoutId"])
    views = [checkout_view(saga=saga, fresh=True), checkout_view(saga=saga)]
    assert _confirm(client, pm="pm_card_threeDSecure2Required").status_code == 202
    saga.refresh_from_db()
    views.append(checkout_view(saga=saga))  # a client secret and a next action
    assert client.post(f"/api/checkout/{saga.public_id}/cancel").status_code == 200
    saga.refresh_from_db()
    views.append(checkout_view(saga=saga))
    views.append({**views[0], "order_id": None, "reservation_expires_at": None, "payment_client_secret": None})
    for view in views:
        assert json.dumps(checkout_start_body(view)) == json.dumps(CheckoutOutputSerializer(view).data)
    assert json.loads(json.dumps(checkout_start_body(views[0]))) == started.json()


def test_a_start_body_is_validated_and_an_empty_one_is_no_body(stripe_emulator):
    """The start skips its input serializer for an empty body only: a body with fields is still checked."""
    product = make_product()
    client = guest_with_cart((product, 1))
    bad = client.post("/api/checkout/start", {"email": "not-an-address"}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "validation_error"
    assert client.post("/api/checkout/start", [1], format="json").status_code == 400
    assert stock(product) == (10, 0)
    started = client.post("/api/checkout/start", {"email": "buyer@example.com"}, format="json")
    assert started.status_code == 201
    assert Order.objects.get(public_id=started.json()["orderId"]).email == "buyer@example.com"
    assert client.post("/api/checkout/start", [], format="json").json()["checkoutId"] == started.json()["checkoutId"]
