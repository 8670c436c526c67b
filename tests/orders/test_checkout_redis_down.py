"""Redis lost in the middle of a confirm or a cancel: what PostgreSQL, Stripe and the flash pool are left with.

Each test runs on a redis-server of its own (``spare_redis``). The outage is injected with SIGSTOP at a
chosen saga step, seen in PostgreSQL ("about to charge", "about to cancel the PaymentIntent"), while a
latency fault holds the Stripe call open: Redis stops answering (socket timeouts, CARTFLOW_REDIS_SOCKET_TIMEOUT)
but keeps its data, so after SIGCONT the test can look at the flash tokens the checkout left behind.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from inventory.flashsale import flash_holders, flash_pool_state, flash_pool_sweep, flash_sale_start
from inventory.models import Reservation, Stock
from orders.models import CheckoutSaga, Order
from orders.saga.driver import saga_recover
from tests.support.saga import charges, intents_of_order, invariants_hold, make_product

pytestmark = pytest.mark.django_db(transaction=True)
CANCEL = "POST /v1/payment_intents/*/cancel"
CREATE = "POST /v1/payment_intents"  # the first confirm creates and confirms the intent in this one call


@pytest.fixture
def own_redis(spare_redis, settings):
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": spare_redis.url}}
    settings.REDIS_URL = spare_redis.url
    yield spare_redis
    if spare_redis.proc.poll() is None:
        os.kill(spare_redis.proc.pid, signal.SIGCONT)


class FreezeAtStep:
    """SIGSTOP the Redis once a checkout is "about to" run ``step`` (polled in PostgreSQL on its own connection)."""

    def __init__(self, server, step: str) -> None:  # noqa: ANN001
        self.server, self.step, self.frozen = server, step, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + 60  # only so a broken saga cannot leave the thread behind
            while time.monotonic() < deadline:
                if CheckoutSaga.objects.filter(step=self.step, step_status="about_to").exists():
                    os.kill(self.server.proc.pid, signal.SIGSTOP)
                    self.frozen.set()
                    return
                time.sleep(0.01)
        finally:
            connection.close()

    def thaw(self) -> None:
        self.thread.join(60)
        assert self.frozen.is_set(), f"the checkout never got to {self.step}"
        os.kill(self.server.proc.pid, signal.SIGCONT)


def _buyer(product) -> APIClient:  # noqa: ANN001
    client = APIClient()
    response = client.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json")
    assert response.status_code == 201, response.content
    client.credentials(HTTP_X_CART_TOKEN=response.json()["token"])
    return client


def _started(flash: bool):  # noqa: ANN202
    product = make_product(on_hand=3)
    if flash:
        product.flash_sale = True
        product.save(update_fields=["flash_sale"])
        flash_sale_start(product_id=product.id)
    client = _buyer(product)
    started = client.post("/api/checkout/start", {}, format="json")
    assert started.status_code == 201, started.content
    return product, client, started.json()["checkoutId"]


def _with_intent(client: APIClient, checkout_id: str) -> str:
    """The checkout's PaymentIntent, created as a Stripe.js storefront does before paying (the start makes
    none), so a cancel has a Stripe step to be cut off in."""
    response = client.post(f"/api/checkout/{checkout_id}/payment-intent")
    assert response.status_code in (200, 201), response.content
    return CheckoutSaga.objects.get(public_id=checkout_id).payment_intent_id


def _stock(product) -> tuple[int, int]:  # noqa: ANN001
    return Stock.objects.values_list("on_hand", "reserved").get(product=product)


def _pool(product) -> tuple[int, int]:  # noqa: ANN001
    state = flash_pool_state(product_id=product.id)
    return state.free, state.inflight


def _confirm(client: APIClient, checkout_id: str):  # noqa: ANN202
    return client.post(
        "/api/checkout/confirm", {"paymentMethodId": "pm_card_visa", "checkoutId": checkout_id}, format="json"
    )


def _assert_503(response) -> None:  # noqa: ANN001
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "service_unavailable" and response["Retry-After"]


def test_redis_down_before_a_confirm_refuses_it_and_charges_nothing(stripe_emulator, own_redis):
    product, client, checkout_id = _started(flash=False)
    own_redis.stop()
    _assert_503(_confirm(client, checkout_id))
    assert charges(stripe_emulator) == 0
    saga = CheckoutSaga.objects.get(public_id=checkout_id)
    assert (saga.state, saga.step, saga.compensate_to) == ("awaiting_payment", "create_order", "")
    assert saga.payment_intent_id == "" and intents_of_order(stripe_emulator, saga.order.public_id) == []
    assert list(Reservation.objects.values_list("holder", "status")) == [(checkout_id, "HELD")]
    assert _stock(product) == (3, 1)


@pytest.mark.parametrize("flash", [False, True], ids=["plain", "flash-sale"])
def test_redis_lost_while_charging_keeps_the_sale_and_the_sweeper_settles_its_tokens(stripe_emulator, own_redis, flash):
    """The charge lands at Stripe while Redis is gone: the order is confirmed and the stock committed in
    PostgreSQL (the money and the goods agree); only the flash tokens' "sold" mark waits for Redis. The
    buyer is told to retry (503), and the retry answers the confirmed checkout without a second charge."""
    product, client, checkout_id = _started(flash)
    stripe_emulator.add_fault(CREATE, "latency", ms=1000)  # the window in which Redis goes away
    freeze = FreezeAtStep(own_redis, "charge")
    lost = _confirm(client, checkout_id)
    freeze.thaw()
    _assert_503(lost)

    saga = CheckoutSaga.objects.select_related("order").get(public_id=checkout_id)
    assert (saga.state, saga.compensate_to) == ("confirmed", "")
    assert (saga.order.status, saga.order.payment_status) == ("confirmed", "succeeded")
    assert list(Reservation.objects.values_list("status", flat=True)) == ["COMMITTED"]
    assert _stock(product) == (2, 0) and charges(stripe_emulator) == 1

    retried = _confirm(client, checkout_id)
    assert (retried.status_code, retried.json()["status"]) == (200, "confirmed")
    assert charges(stripe_emulator) == 1
    if flash:
        assert [h.holder for h in flash_holders()] == [checkout_id]  # neither returned nor consumed yet
        assert flash_pool_sweep().consumed == [checkout_id]
        assert _pool(product) == (2, 0)
    assert flash_holders() == []
    invariants_hold()


@pytest.mark.parametrize("flash", [False, True], ids=["plain", "flash-sale"])
def test_redis_lost_while_cancelling_still_releases_the_stock(stripe_emulator, own_redis, flash):
    """Cancel: the PaymentIntent is cancelled and the hold released in PostgreSQL although the flash tokens'
    return (Redis) fails; the flash sweeper returns them and recovery finishes the saga at ``cancelled``."""
    product, client, checkout_id = _started(flash)
    intent_id = _with_intent(client, checkout_id)
    stripe_emulator.add_fault(CANCEL, "latency", ms=1000)
    freeze = FreezeAtStep(own_redis, "cancel_payment_intent")
    lost = client.post(f"/api/checkout/{checkout_id}/cancel")
    freeze.thaw()
    _assert_503(lost)

    assert list(Reservation.objects.values_list("status", flat=True)) == ["RELEASED"]
    assert _stock(product) == (3, 0) and charges(stripe_emulator) == 0
    assert Order.objects.values_list("status", "payment_status").get() == ("cancelled", "canceled")
    assert [e["data"]["object"]["id"] for e in stripe_emulator.events("payment_intent.canceled")] == [intent_id]
    saga = CheckoutSaga.objects.get(public_id=checkout_id)
    assert saga.compensate_to == "cancelled"  # the compensation is recorded, so nothing can revive it

    if flash:
        assert [h.holder for h in flash_holders()] == [checkout_id]
        assert flash_pool_sweep().returned == [checkout_id]
        assert _pool(product) == (3, 0)
    assert flash_holders() == []
    assert saga_recover(now=timezone.now() + timedelta(minutes=5))["resumed"] == 1
    saga.refresh_from_db()
    assert (saga.state, saga.compensate_to) == ("cancelled", "")
    invariants_hold()


def test_retrying_a_cancel_that_redis_interrupted_finishes_it(stripe_emulator, own_redis):
    """The cut-off cancel left the saga compensating to ``cancelled``: a confirm is refused (not
    confirmable, nothing charged) and the buyer's retried cancel finishes the compensation."""
    product, client, checkout_id = _started(flash=False)
    intent_id = _with_intent(client, checkout_id)
    stripe_emulator.add_fault(CANCEL, "latency", ms=1000)
    freeze = FreezeAtStep(own_redis, "cancel_payment_intent")
    _assert_503(client.post(f"/api/checkout/{checkout_id}/cancel"))
    freeze.thaw()
    saga = CheckoutSaga.objects.get(public_id=checkout_id)
    assert (saga.state, saga.compensate_to) == ("awaiting_payment", "cancelled")

    refused = _confirm(client, checkout_id)
    assert refused.status_code == 409 and refused.json()["code"] == "checkout_not_confirmable", refused.content
    assert charges(stripe_emulator) == 0

    retried = client.post(f"/api/checkout/{checkout_id}/cancel")
    assert (retried.status_code, retried.json().get("status")) == (200, "cancelled"), retried.content
    saga.refresh_from_db()
    assert (saga.state, saga.compensate_to) == ("cancelled", "")
    assert list(Reservation.objects.values_list("status", flat=True)) == ["RELEASED"]
    assert _stock(product) == (3, 0) and charges(stripe_emulator) == 0
    assert [e["data"]["object"]["id"] for e in stripe_emulator.events("payment_intent.canceled")] == [intent_id]
    again = client.post(f"/api/checkout/{checkout_id}/cancel")  # and once more: the same answer
    assert (again.status_code, again.json().get("status")) == (200, "cancelled"), again.content
    invariants_hold()
