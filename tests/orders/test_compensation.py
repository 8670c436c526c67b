"""Compensation to ``failed`` through the HTTP endpoints: the paths tests/orders/test_saga_failures.py drives at the
service level (the confirm's PaymentIntent creation fails; the hold lapses and the stock goes while the buyer
pays) reached here by a buyer's requests instead, with the money and the stock asserted."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from inventory.models import Reservation
from inventory.services import reservation_release
from orders.models import CheckoutSaga, Order
from tests.support.saga import (
    charges,
    guest_with_cart,
    held,
    intents_of_order,
    invariants_hold,
    make_product,
    refunds,
    stock,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_confirm_whose_payment_intent_cannot_be_created_charges_nothing_and_a_hold_lost_meanwhile_fails_it(
    stripe_emulator,
):
    """The deferred flow: the start makes no Stripe call, the confirm creates and confirms the intent. When
    Stripe answers 500s, the confirm answers 503 with nothing charged and the checkout still open; if the
    hold is lost and the stock sold meanwhile, the retry compensates to ``failed`` and refunds what it charged."""
    product = make_product(on_hand=3)
    client, rival = guest_with_cart((product, 3)), guest_with_cart((product, 3))
    started = client.post("/api/checkout/start", {}, format="json")
    assert started.status_code == 201 and started.json()["paymentStatus"] == "none", started.content
    checkout_id = started.json()["checkoutId"]
    order_id = CheckoutSaga.objects.get(public_id=checkout_id).order.public_id
    assert intents_of_order(stripe_emulator, order_id) == []  # start called no Stripe

    stripe_emulator.add_fault("POST /v1/payment_intents", "http_500", times=10)
    pay = {"paymentMethodId": "pm_card_visa"}
    response = client.post("/api/checkout/confirm", pay, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "payment_provider_unavailable" and response["Retry-After"]
    saga = CheckoutSaga.objects.get()
    assert (saga.state, saga.compensate_to) == ("awaiting_payment", "")
    assert held(checkout_id) == 3 and stock(product) == (3, 3)
    assert charges(stripe_emulator) == 0 and intents_of_order(stripe_emulator, order_id) == []

    stripe_emulator.clear_faults()
    reservation_release(holder=checkout_id, status="EXPIRED")  # the hold lapses; a rival takes the stock
    assert rival.post("/api/checkout/start", {}, format="json").status_code == 201
    # The retry first replays the create-and-confirm whose outcome was unknown (same key): it charges now,
    # finds the stock gone at confirm, and compensates to failed with the charge refunded.
    again = client.post("/api/checkout/confirm", pay, format="json")
    assert again.status_code == 409, again.content
    assert (again.json()["code"], again.json()["checkoutStatus"]) == ("checkout_not_confirmable", "failed")
    saga.refresh_from_db()
    assert (saga.state, saga.compensate_to) == ("failed", "")
    order = Order.objects.get(pk=saga.order_id)
    assert (order.status, order.payment_status) == ("cancelled", "refunded")
    assert held(checkout_id) == 0 and stock(product) == (3, 3)  # the 3 held are the rival's
    assert len(intents_of_order(stripe_emulator, order_id)) == 1
    assert charges(stripe_emulator) == 1 and refunds(stripe_emulator) == 1
    invariants_hold()


def test_a_hold_lost_while_the_buyer_pays_fails_the_checkout_and_refunds_it(stripe_emulator):
    """The charge is held open (latency); meanwhile the hold lapses and another buyer takes the last unit.
    The confirm finds no stock to commit: the checkout compensates to failed and the charge is refunded."""
    product = make_product(on_hand=1)
    buyer, rival = guest_with_cart((product, 1)), guest_with_cart((product, 1))
    checkout_id = buyer.post("/api/checkout/start", {}, format="json").json()["checkoutId"]
    stripe_emulator.add_fault("POST /v1/payment_intents", "latency", ms=1000)  # the create-and-confirm
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
