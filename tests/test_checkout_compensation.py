"""Compensation to ``failed`` through the HTTP endpoints: the paths tests/test_saga_failures.py drives at the
service level (the start's PaymentIntent creation fails; the hold lapses and the stock goes while the buyer
pays) reached here by a buyer's requests instead, with the money and the stock asserted."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from inventory.models import Reservation
from inventory.services import reservation_release
from orders.models import CheckoutSaga, Order
from tests.saga_support import charges, guest_with_cart, held, invariants_hold, make_product, refunds, stock

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_start_whose_payment_intent_cannot_be_created_fails_and_gives_the_stock_back(stripe_emulator):
    product = make_product(on_hand=4)
    client = guest_with_cart((product, 3))
    stripe_emulator.add_fault("POST /v1/payment_intents", "http_500", times=10)
    response = client.post("/api/checkout/start", {}, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "payment_provider_unavailable" and response["Retry-After"]
    saga = CheckoutSaga.objects.get()
    assert (saga.state, saga.compensate_to) == ("failed", "")
    assert Order.objects.get(pk=saga.order_id).status == "cancelled"
    assert held(saga.public_id) == 0 and stock(product) == (4, 0)
    assert charges(stripe_emulator) == 0

    stripe_emulator.clear_faults()
    again = client.post("/api/checkout/start", {}, format="json")  # the retry is a fresh checkout
    assert again.status_code == 201 and again.json()["checkoutId"] != saga.public_id
    assert stock(product) == (4, 3)
    invariants_hold()


def test_a_hold_lost_while_the_buyer_pays_fails_the_checkout_and_refunds_it(stripe_emulator):
    """The charge is held open (latency); meanwhile the hold lapses and another buyer takes the last unit.
    The confirm finds no stock to commit: the checkout compensates to failed and the charge is refunded."""
    product = make_product(on_hand=1)
    buyer, rival = guest_with_cart((product, 1)), guest_with_cart((product, 1))
    checkout_id = buyer.post("/api/checkout/start", {}, format="json").json()["checkoutId"]
    stripe_emulator.add_fault("POST /v1/payment_intents/*/confirm", "latency", ms=1000)
    rival_start: list = []

    def lapse_and_take() -> None:
        try:
            deadline = time.monotonic() + 30
            while not CheckoutSaga.objects.filter(public_id=checkout_id, step="charge", step_status="about_to"):
                assert time.monotonic() < deadline, "the confirm never started charging"
                time.sleep(0.01)
            reservation_release(holder=checkout_id, status="EXPIRED")  # its hold lapses mid-payment
            rival_start.append(rival.post("/api/checkout/start", {}, format="json"))
        finally:
            connection.close()

    thread = threading.Thread(target=lapse_and_take)
    thread.start()
    response = buyer.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    thread.join(60)
    assert rival_start and rival_start[0].status_code == 201, rival_start
    body = response.json()
    assert (body["checkoutId"], body["status"], body["paymentStatus"]) == (checkout_id, "failed", "refunded"), body

    saga = CheckoutSaga.objects.get(public_id=checkout_id)
    assert (saga.state, saga.compensate_to) == ("failed", "")
    order = Order.objects.get(pk=saga.order_id)
    assert (order.status, order.payment_status) == ("cancelled", "refunded")
    assert charges(stripe_emulator) == 1 and refunds(stripe_emulator) == 1
    assert list(Reservation.objects.filter(holder=checkout_id).values_list("status", flat=True)) == ["EXPIRED"]
    assert stock(product) == (1, 1)  # the unit is the rival's hold
    invariants_hold()
