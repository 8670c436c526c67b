"""Concurrency on separate DB connections (real threads): starts and confirms of one cart/checkout,
and Idempotency-Key replay / reuse / in-progress."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from cart.identity import cart_ref_for_token
from cartflow.models import IdempotencyRecord
from orders.models import CheckoutSaga
from orders.saga.driver import checkout_confirm, checkout_start
from tests.support.saga import charges, guest_with_cart, held, invariants_hold, make_product, stock
from tests.support.threads import race

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_starts_of_one_cart_reserve_once(stripe_emulator):
    product = make_product()
    client = guest_with_cart((product, 3))
    cart_key = cart_ref_for_token(client._credentials["HTTP_X_CART_TOKEN"]).key
    results = race(6, lambda i: checkout_start(cart_key=cart_key))
    sagas = [r[0] for r in results if isinstance(r, tuple)]
    assert sum(1 for r in results if isinstance(r, tuple) and r[1]) == 1
    assert {s.pk for s in sagas} == {CheckoutSaga.objects.get().pk}
    assert all(isinstance(r, tuple) or getattr(r, "code", "") == "checkout_in_progress" for r in results)
    assert stock(product) == (10, 3) and stripe_emulator.events() == []  # the start makes no Stripe call


def test_concurrent_confirms_charge_once(stripe_emulator):
    product = make_product()
    client = guest_with_cart((product, 1))
    checkout_id = client.post("/api/checkout/start", {}, format="json").json()["checkoutId"]
    saga = CheckoutSaga.objects.get(public_id=checkout_id)
    # The first charge creates and confirms the intent in one call: make it slow, so the confirms overlap.
    stripe_emulator.add_fault("POST /v1/payment_intents", "latency", ms=300, times=10)
    results = race(5, lambda i: checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa"))
    ok = [r for r in results if isinstance(r, CheckoutSaga)]
    assert ok and all(r.state == "confirmed" for r in ok)
    assert all(isinstance(r, CheckoutSaga) or getattr(r, "code", "") == "checkout_in_progress" for r in results)
    assert charges(stripe_emulator) == 1 and stock(product) == (9, 0)
    invariants_hold()


def test_idempotency_key_replays_the_stored_response(stripe_emulator):
    client = guest_with_cart((make_product(), 1))
    first = client.post("/api/checkout/start", {}, format="json", headers={"Idempotency-Key": "start-1"})
    confirm = {"paymentMethodId": "pm_card_visa"}
    one = client.post("/api/checkout/confirm", confirm, format="json", headers={"Idempotency-Key": "c-1"})
    two = client.post("/api/checkout/confirm", confirm, format="json", headers={"Idempotency-Key": "c-1"})
    assert one.status_code == two.status_code == 200
    assert one.json() == two.json() and two["Idempotent-Replayed"] == "true"
    assert not one.has_header("Idempotent-Replayed")
    again = client.post("/api/checkout/start", {}, format="json", headers={"Idempotency-Key": "start-1"})
    assert again.status_code == 201 and again.json() == first.json()
    assert charges(stripe_emulator) == 1


def test_idempotency_key_with_another_body_is_422_and_keys_are_scoped_to_the_cart(stripe_emulator):
    product = make_product()
    client = guest_with_cart((product, 1))
    client.post("/api/checkout/start", {}, format="json")
    declined = client.post(
        "/api/checkout/confirm",
        {"paymentMethodId": "pm_card_chargeDeclined"},
        format="json",
        headers={"Idempotency-Key": "k"},
    )
    assert declined.status_code == 402
    replay = client.post(
        "/api/checkout/confirm",
        {"paymentMethodId": "pm_card_chargeDeclined"},
        format="json",
        headers={"Idempotency-Key": "k"},
    )
    assert replay.status_code == 402 and replay["Idempotent-Replayed"] == "true"
    reused = client.post(
        "/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json", headers={"Idempotency-Key": "k"}
    )
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    # Another cart using the same key is a different request altogether.
    other = guest_with_cart((product, 1))
    assert other.post("/api/checkout/start", {}, format="json", headers={"Idempotency-Key": "k"}).status_code == 201
    bad = client.post("/api/checkout/start", {}, format="json", headers={"Idempotency-Key": "bad key\u00e9"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_idempotency_key"


def test_same_key_while_the_first_request_runs_is_409_with_retry_after(stripe_emulator):
    client = guest_with_cart((make_product(), 1))
    client.post("/api/checkout/start", {}, format="json")
    token = client._credentials["HTTP_X_CART_TOKEN"]
    stripe_emulator.add_fault("POST /v1/payment_intents", "latency", ms=1500)

    def call(i: int):  # noqa: ANN202
        if i == 1:  # once the first request holds the key (its record is in, not completed)
            deadline = time.monotonic() + 30
            while not IdempotencyRecord.objects.filter(key="slow", completed_at__isnull=True).exists():
                assert time.monotonic() < deadline, "the first request never took the key"
                time.sleep(0.01)
        c = APIClient()
        c.credentials(HTTP_X_CART_TOKEN=token)
        return c.post(
            "/api/checkout/confirm",
            {"paymentMethodId": "pm_card_visa"},
            format="json",
            headers={"Idempotency-Key": "slow"},
        )

    first, second = race(2, call)
    assert first.status_code == 200
    assert second.status_code == 409 and second.json()["code"] == "idempotency_request_in_progress"
    assert second["Retry-After"]
    assert charges(stripe_emulator) == 1


def test_expired_checkout_frees_the_cart_for_a_new_one(stripe_emulator, settings):
    from inventory.services import reservations_release_expired
    from tests.support.saga import later

    product = make_product()
    client = guest_with_cart((product, 2))
    first = client.post("/api/checkout/start", {}, format="json").json()
    assert reservations_release_expired(now=later(minutes=20)) == [first["checkoutId"]]
    assert CheckoutSaga.objects.get(public_id=first["checkoutId"]).state == "expired"
    response = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    # Without checkoutId the cart's lapsed checkout is named: 409 reservation_expired, not "no checkout".
    assert response.status_code == 409 and response.json()["code"] == "reservation_expired"
    expired = client.post(
        "/api/checkout/confirm", {"paymentMethodId": "pm_card_visa", "checkoutId": first["checkoutId"]}, format="json"
    )
    assert expired.status_code == 409 and expired.json()["code"] == "reservation_expired"
    second = client.post("/api/checkout/start", {}, format="json")
    assert second.status_code == 201 and second.json()["checkoutId"] != first["checkoutId"]
    assert held(first["checkoutId"]) == 0 and stock(product) == (10, 2)
    invariants_hold()
