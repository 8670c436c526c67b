"""The deferred PaymentIntent flow over HTTP: an order's one intent is created when the buyer pays.

The start makes no Stripe call; the first confirm creates and confirms the intent in one call; a later
attempt (after a decline) or a confirm after ``/payment-intent`` confirms that same intent. The emulator's
own table of PaymentIntents (by ``metadata.order_id``) is the witness that there is never a second one.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from orders.models import CheckoutSaga
from payments.models import PaymentAttempt
from tests.support.saga import (
    charges,
    guest_with_cart,
    intents_of_order,
    invariants_hold,
    make_product,
    stock,
    stripe_request_counter,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _start(client: APIClient) -> dict:
    response = client.post("/api/checkout/start", {}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _confirm(client: APIClient, checkout_id: str, **body: str):
    return client.post("/api/checkout/confirm", {"checkoutId": checkout_id, **body}, format="json")


def _payment_intent(client: APIClient, checkout_id: str):
    return client.post(f"/api/checkout/{checkout_id}/payment-intent")


def test_first_confirm_creates_and_confirms_the_intent_in_one_call(stripe_emulator):
    product = make_product(price=1500)
    client = guest_with_cart((product, 2))
    start = _start(client)
    stripe_requests = stripe_request_counter(stripe_emulator)
    response = _confirm(client, start["checkoutId"], paymentMethodId="pm_card_visa")
    assert response.status_code == 200 and response.json()["status"] == "confirmed", response.content
    assert stripe_requests() == 1  # one POST /v1/payment_intents with confirm=true, nothing else
    [intent_id] = intents_of_order(stripe_emulator, start["orderId"])
    intent = stripe_emulator.server.state.payment_intents[intent_id]
    assert intent["metadata"] == {"order_id": start["orderId"], "checkout_id": start["checkoutId"]}
    assert (intent["amount"], intent["currency"], intent["status"]) == (3000, "usd", "succeeded")
    saga = CheckoutSaga.objects.get(public_id=start["checkoutId"])
    assert saga.payment_intent_id == intent_id and saga.order.payment_intent_id == intent_id
    keys = list(PaymentAttempt.objects.values_list("operation", "idempotency_key"))
    assert keys == [("create_confirm", f"cf:{start['orderId']}:pi-create-confirm:1")]
    invariants_hold()


def test_a_decline_then_another_card_confirms_the_same_intent(stripe_emulator):
    product = make_product()
    client = guest_with_cart((product, 1))
    start = _start(client)
    declined = _confirm(client, start["checkoutId"], paymentMethodId="pm_card_chargeDeclined")
    assert declined.status_code == 402 and declined.json()["code"] == "payment_declined"
    [first] = intents_of_order(stripe_emulator, start["orderId"])
    assert CheckoutSaga.objects.get(public_id=start["checkoutId"]).payment_intent_id == first

    declined_again = _confirm(client, start["checkoutId"], paymentMethodId="pm_card_chargeDeclinedInsufficientFunds")
    assert declined_again.status_code == 402 and declined_again.json()["declineCode"] == "insufficient_funds"
    ok = _confirm(client, start["checkoutId"], paymentMethodId="pm_card_visa")
    assert ok.status_code == 200 and ok.json()["status"] == "confirmed", ok.content
    assert intents_of_order(stripe_emulator, start["orderId"]) == [first]  # one intent across three attempts
    assert stripe_emulator.server.state.payment_intents[first]["status"] == "succeeded"
    assert charges(stripe_emulator) == 1 and stock(product) == (9, 0)
    invariants_hold()


def test_payment_intent_endpoint_gives_the_same_intent_and_confirm_uses_it(stripe_emulator):
    product = make_product(price=999)
    client = guest_with_cart((product, 3))
    start = _start(client)
    first = _payment_intent(client, start["checkoutId"])
    assert first.status_code == 200, first.content
    body = first.json()
    assert set(body) == {"paymentIntentId", "paymentClientSecret", "amount", "currency"}
    assert (body["amount"], body["currency"]) == (2997, "usd")
    assert body["paymentClientSecret"].startswith(body["paymentIntentId"] + "_secret_")
    assert _payment_intent(client, start["checkoutId"]).json() == body
    assert intents_of_order(stripe_emulator, start["orderId"]) == [body["paymentIntentId"]]
    intent = stripe_emulator.server.state.payment_intents[body["paymentIntentId"]]
    assert intent["status"] == "requires_payment_method"  # created, not confirmed: Stripe.js confirms it
    assert intent["metadata"] == {"order_id": start["orderId"], "checkout_id": start["checkoutId"]}

    ok = _confirm(client, start["checkoutId"], paymentMethodId="pm_card_visa")
    assert ok.status_code == 200 and ok.json()["status"] == "confirmed", ok.content
    assert intents_of_order(stripe_emulator, start["orderId"]) == [body["paymentIntentId"]]
    assert _payment_intent(client, start["checkoutId"]).json()["paymentIntentId"] == body["paymentIntentId"]
    invariants_hold()


def test_payment_intent_endpoint_is_only_for_the_checkouts_cart(stripe_emulator):
    product = make_product()
    owner = guest_with_cart((product, 1))
    start = _start(owner)
    stranger = guest_with_cart((product, 1))
    for client in (stranger, APIClient()):
        response = _payment_intent(client, start["checkoutId"])
        assert response.status_code == 404 and response.json()["code"] == "checkout_not_found"
    assert _payment_intent(owner, "chk_doesnotexist").status_code == 404
    assert intents_of_order(stripe_emulator, start["orderId"]) == []


def test_payment_intent_endpoint_refuses_an_ended_checkout(stripe_emulator):
    client = guest_with_cart((make_product(), 1))
    start = _start(client)
    assert client.post(f"/api/checkout/{start['checkoutId']}/cancel").status_code == 200
    response = _payment_intent(client, start["checkoutId"])
    assert response.status_code == 409 and response.json()["code"] == "checkout_not_confirmable"
    assert stripe_emulator.events() == []


def test_unknown_payment_method_is_400_not_a_decline_and_the_checkout_stays_confirmable(stripe_emulator):
    product = make_product()
    client = guest_with_cart((product, 1))
    start = _start(client)
    bad = _confirm(client, start["checkoutId"], paymentMethodId="pm_does_not_exist")
    assert bad.status_code == 400, bad.content
    assert bad.json()["code"] == "payment_method_invalid" and bad["Content-Type"] == "application/problem+json"
    detail = client.get(f"/api/checkout/{start['checkoutId']}").json()
    assert detail["status"] == "awaiting_payment" and detail["lastErrorCode"] == "payment_method_invalid"
    assert intents_of_order(stripe_emulator, start["orderId"]) == []  # Stripe created nothing for it
    assert stock(product) == (10, 1)  # the hold is kept

    ok = _confirm(client, start["checkoutId"], paymentMethodId="pm_card_visa")
    assert ok.status_code == 200 and ok.json()["status"] == "confirmed", ok.content
    assert len(intents_of_order(stripe_emulator, start["orderId"])) == 1 and charges(stripe_emulator) == 1
    invariants_hold()


def test_unknown_payment_method_on_an_existing_intent_is_400_too(stripe_emulator):
    client = guest_with_cart((make_product(), 1))
    start = _start(client)
    intent_id = _payment_intent(client, start["checkoutId"]).json()["paymentIntentId"]
    bad = _confirm(client, start["checkoutId"], paymentMethodId="pm_does_not_exist")
    assert bad.status_code == 400 and bad.json()["code"] == "payment_method_invalid", bad.content
    assert stripe_emulator.server.state.payment_intents[intent_id]["status"] == "requires_payment_method"
    ok = _confirm(client, start["checkoutId"], paymentMethodId="pm_card_visa")
    assert ok.status_code == 200 and intents_of_order(stripe_emulator, start["orderId"]) == [intent_id]


@pytest.mark.parametrize(
    "body",
    [{}, {"paymentMethodId": "pm_card_visa", "confirmationToken": "ctoken_x"}, {"paymentMethodId": ""}],
    ids=["neither", "both", "empty"],
)
def test_confirm_needs_exactly_one_payment_method_or_token(stripe_emulator, body):
    client = guest_with_cart((make_product(), 1))
    start = _start(client)
    response = _confirm(client, start["checkoutId"], **body)
    assert response.status_code == 400 and response.json()["code"] == "validation_error", response.content
    assert stripe_emulator.events() == []
