"""Real crashes: a live gunicorn server is SIGKILLed in the middle of a saga step, then recovery ends it.

tests/orders/test_saga_failures.py raises ``SimulatedCrash`` at the crash points of orders/saga/ inside the
test process; here the process really dies. Each test starts gunicorn (tests/support/gunicorn.py) with
``CARTFLOW_TEST_PAUSE_AT=<point>`` and a 1 s saga lease, drives a buyer over HTTP until the worker blocks at
that point, checks what is persisted at that instant, kills the worker with SIGKILL (no ``finally``, no
``except``, no lease release: its database connections just drop), waits for the dead lease to lapse and
runs ``manage.py recover_sagas`` as a fresh process. The saga must end in the right terminal state, the
stock must add up, the emulator must hold exactly the charges and refunds that belong to it, and
``check_invariants`` must be clean. Webhooks are off (the emulator's URL is unset): recovery alone has to
find out what Stripe did.

One test per step family: reserve (start), charge (before and after the money moves), confirm, and
compensation (cancel's release, with and without a PaymentIntent; expiry's refund). The start makes no
Stripe call: the buyer's confirm creates and confirms the order's one PaymentIntent, and a storefront that
confirms with Stripe.js gets it unconfirmed from ``POST /api/checkout/{id}/payment-intent`` (orders/saga/driver.py).
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from inventory.models import Product, Reservation, Stock
from inventory.services import reservation_release
from orders.models import CheckoutSaga, Order
from orders.services import outbox_process_pending
from tests.support.gunicorn import GunicornServer, wait_for
from tests.support.saga import stripe_request_counter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def gunicorn_server(transactional_db, stripe_emulator) -> Iterator[Callable[..., GunicornServer]]:  # noqa: ARG001
    """Start a gunicorn paused at a crash point; stopped before the test's rows are flushed."""
    started: list[GunicornServer] = []

    def start(pause_at: str) -> GunicornServer:
        started.append(
            GunicornServer.start(
                stripe_url=stripe_emulator.url,
                webhook_secret=stripe_emulator.secret,
                pause_at=pause_at,
                # The killed worker's lease lapses a second after its last save.
                CARTFLOW_SAGA_LEASE_SECONDS="1",
            )
        )
        return started[-1]

    yield start
    for server in started:
        server.stop()


class Buyer:
    def __init__(self, server: GunicornServer) -> None:
        self.http = httpx.Client(base_url=server.url + "/api", timeout=60)

    def add(self, product: Product, quantity: int) -> None:
        response = self.http.post("/cart/items", json={"productId": product.id, "quantity": quantity})
        assert response.status_code == 201, response.text
        self.http.headers["X-Cart-Token"] = response.json()["token"]

    def start(self) -> httpx.Response:
        return self.http.post("/checkout/start", json={"email": "buyer@example.com"})

    def confirm(self, checkout_id: str, pm: str = "pm_card_visa") -> httpx.Response:
        return self.http.post("/checkout/confirm", json={"paymentMethodId": pm, "checkoutId": checkout_id})

    def cancel(self, checkout_id: str) -> httpx.Response:
        return self.http.post(f"/checkout/{checkout_id}/cancel")

    def payment_intent(self, checkout_id: str) -> str:
        """The checkout's PaymentIntent for Stripe.js (created unconfirmed); returns its id as the saga has it."""
        response = self.http.post(f"/checkout/{checkout_id}/payment-intent")
        assert response.status_code == 200, response.text
        intent_id = CheckoutSaga.objects.get(public_id=checkout_id).payment_intent_id
        assert intent_id.startswith("pi_"), intent_id
        return intent_id


@pytest.fixture
def buyers(gunicorn_server) -> Iterator[Callable[[GunicornServer], Buyer]]:  # noqa: ARG001 - closed first
    made: list[Buyer] = []

    def make(server: GunicornServer) -> Buyer:
        made.append(Buyer(server))
        return made[-1]

    yield make
    for buyer in made:
        buyer.http.close()


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def _product(*, on_hand: int = 10, price: int = 2500) -> Product:
    product = Product.objects.create(sku=f"KILL-{uuid.uuid4().hex[:8]}", name="Mug", price=price, currency="usd")
    Stock.objects.create(product=product, on_hand=on_hand)
    return product


def _stock(product: Product) -> tuple[int, int]:
    row = Stock.objects.get(product=product)
    return row.on_hand, row.reserved


def _held(holder: str) -> int:
    return sum(Reservation.objects.filter(holder=holder, status="HELD").values_list("quantity", flat=True))


def _saga(**lookup: Any) -> CheckoutSaga:
    return CheckoutSaga.objects.select_related("order").get(**lookup)


def _intents(emulator) -> list[Any]:  # noqa: ANN001
    return list(emulator.client().v1.payment_intents.list(params={"limit": 100}).data)


def _succeeded(emulator) -> int:  # noqa: ANN001
    return sum(1 for pi in _intents(emulator) if pi.status == "succeeded")


def _refunds(emulator) -> list[Any]:  # noqa: ANN001
    return [r for r in emulator.client().v1.refunds.list(params={"limit": 100}).data if r.status == "succeeded"]


def _killed_mid_request(server: GunicornServer, request: concurrent.futures.Future) -> None:
    """SIGKILL the worker blocked at the crash point: the buyer's request dies with it (no response)."""
    server.kill_paused()
    with pytest.raises(httpx.TransportError):
        request.result(timeout=30)


def _recover(server: GunicornServer, saga_pk: int) -> str:
    """Once the dead process's lease has lapsed, ``recover_sagas`` in a fresh process resumes the saga."""
    saga = CheckoutSaga.objects.get(pk=saga_pk)
    assert saga.lease_owner, "the killed process released nothing: its lease is still on the saga"
    wait_for(
        lambda: CheckoutSaga.objects.get(pk=saga_pk).lease_expires_at < timezone.now(),
        timeout=10,
        what="the dead lease lapsed",
    )
    out = server.manage_py("recover_sagas")
    assert "resumed 1, busy 0, errors 0" in out, out
    return out


def _clean() -> None:
    call_command("check_invariants")  # raises CommandError listing every violation


# --- reserve ---------------------------------------------------------------------------------------------


def test_killed_after_reserve_recovery_finishes_the_start_without_holding_twice(
    gunicorn_server, buyers, pool, stripe_emulator
):
    server = gunicorn_server("reserve:after")
    product = _product()
    buyer = buyers(server)
    buyer.add(product, 2)
    request = pool.submit(buyer.start)
    server.wait_paused()
    saga = _saga(cart_key__isnull=False)
    # The stock is held, nothing else exists yet: no order, no PaymentIntent.
    assert (saga.state, saga.step, saga.step_status) == ("reserved", "reserve", "about_to")
    assert _stock(product) == (10, 2) and Order.objects.count() == 0 and _intents(stripe_emulator) == []

    _killed_mid_request(server, request)
    _recover(server, saga.pk)

    saga = _saga(pk=saga.pk)
    assert saga.state == "awaiting_payment" and saga.lease_owner == ""
    assert _held(saga.public_id) == 2 and _stock(product) == (10, 2)  # reserved again for the holder: once
    # The finished start made no Stripe call either: the PaymentIntent is created when the buyer pays.
    assert Order.objects.count() == 1 and _intents(stripe_emulator) == [] and saga.payment_intent_id == ""

    # The buyer's retry reaches the fresh worker: the same checkout, which pays once and is fulfilled.
    again = buyer.start()
    assert again.status_code == 200 and again.json()["checkoutId"] == saga.public_id, again.text
    paid = buyer.confirm(saga.public_id)
    assert paid.status_code == 200, paid.text
    outbox_process_pending()
    assert _saga(pk=saga.pk).state == "fulfilled" and _stock(product) == (8, 0)
    assert _succeeded(stripe_emulator) == 1 and len(_intents(stripe_emulator)) == 1
    assert _refunds(stripe_emulator) == []
    _clean()


# --- charge ----------------------------------------------------------------------------------------------


def _awaiting_payment(server: GunicornServer, buyers, product: Product) -> tuple[Buyer, CheckoutSaga]:  # noqa: ANN001
    buyer = buyers(server)
    buyer.add(product, 2)
    started = buyer.start()
    assert started.status_code == 201, started.text
    return buyer, _saga(public_id=started.json()["checkoutId"])


def test_killed_before_the_charge_recovery_replays_the_create_and_confirms_with_one_charge(
    gunicorn_server, buyers, pool, stripe_emulator
):
    server = gunicorn_server("charge:before")
    product = _product()
    buyer, saga = _awaiting_payment(server, buyers, product)
    request = pool.submit(buyer.confirm, saga.public_id)
    server.wait_paused()
    # "About to charge" is saved with what the buyer pays with; the create-and-confirm has not reached Stripe.
    at_kill = _saga(pk=saga.pk)
    assert (at_kill.step, at_kill.step_status, at_kill.attempt) == ("charge", "about_to", 1)
    assert at_kill.charge_params == {"payment_method": "pm_card_visa"} and at_kill.payment_intent_id == ""
    assert _intents(stripe_emulator) == []

    _killed_mid_request(server, request)
    # Recovery cannot tell "never sent" from "sent, answer lost": it replays the attempt's create-and-confirm
    # with the same key and parameters, so the buyer is charged once and the order is confirmed.
    _recover(server, saga.pk)

    saga = _saga(pk=saga.pk)
    assert saga.state == "fulfilled" and saga.order.status == "fulfilled"
    assert saga.order.payment_status == "succeeded" and saga.payment_intent_id.startswith("pi_")
    assert saga.order.payment_intent_id == saga.payment_intent_id
    assert _stock(product) == (8, 0) and Reservation.objects.get(holder=saga.public_id).status == "COMMITTED"
    intents = _intents(stripe_emulator)
    assert [pi.id for pi in intents] == [saga.payment_intent_id] and _succeeded(stripe_emulator) == 1
    assert _refunds(stripe_emulator) == []

    again = buyer.confirm(saga.public_id)  # the buyer retries the lost request: the finished checkout, no charge
    assert again.status_code == 200 and again.json()["status"] == "fulfilled", again.text
    assert _succeeded(stripe_emulator) == 1 and len(_intents(stripe_emulator)) == 1
    _clean()


def test_killed_after_the_money_moved_recovery_confirms_with_one_charge(gunicorn_server, buyers, pool, stripe_emulator):
    server = gunicorn_server("charge:after")
    product = _product()
    buyer, saga = _awaiting_payment(server, buyers, product)
    request = pool.submit(buyer.confirm, saga.public_id)
    server.wait_paused()
    # Stripe took the money; the saga does not know it yet.
    assert _succeeded(stripe_emulator) == 1
    at_kill = _saga(pk=saga.pk)
    assert (at_kill.state, at_kill.step, at_kill.step_status) == ("awaiting_payment", "charge", "about_to")

    _killed_mid_request(server, request)
    _recover(server, saga.pk)  # settles the charge from Stripe, confirms, and processes the outbox

    saga = _saga(pk=saga.pk)
    assert saga.state == "fulfilled" and saga.order.status == "fulfilled"
    assert saga.order.payment_status == "succeeded"
    assert _stock(product) == (8, 0) and Reservation.objects.get(holder=saga.public_id).status == "COMMITTED"
    assert _succeeded(stripe_emulator) == 1 and len(_intents(stripe_emulator)) == 1
    assert _refunds(stripe_emulator) == []
    # A buyer retrying the lost request gets the finished checkout, not a second charge.
    assert buyer.confirm(saga.public_id).status_code == 200
    assert _succeeded(stripe_emulator) == 1
    _clean()


# --- confirm ---------------------------------------------------------------------------------------------


def test_killed_after_the_stock_was_committed_recovery_fulfils_once(gunicorn_server, buyers, pool, stripe_emulator):
    server = gunicorn_server("confirm:after")
    product = _product()
    buyer, saga = _awaiting_payment(server, buyers, product)
    request = pool.submit(buyer.confirm, saga.public_id)
    server.wait_paused()
    # Paid and the hold committed, but the order is not confirmed and no outbox event exists.
    at_kill = _saga(pk=saga.pk)
    assert (at_kill.state, at_kill.step, at_kill.step_status) == ("paid", "confirm", "about_to")
    assert _stock(product) == (8, 0) and at_kill.order.status == "paid"

    _killed_mid_request(server, request)
    _recover(server, saga.pk)

    saga = _saga(pk=saga.pk)
    assert saga.state == "fulfilled" and saga.order.status == "fulfilled"
    assert _stock(product) == (8, 0)  # committed once, not twice
    assert Reservation.objects.get(holder=saga.public_id).status == "COMMITTED"
    assert _succeeded(stripe_emulator) == 1 and _refunds(stripe_emulator) == []
    _clean()


# --- compensation ----------------------------------------------------------------------------------------


def test_killed_mid_cancel_before_paying_recovery_releases_the_stock_once_without_calling_stripe(
    gunicorn_server, buyers, pool, stripe_emulator
):
    server = gunicorn_server("release:before")
    product = _product()
    buyer, saga = _awaiting_payment(server, buyers, product)
    other = _product()
    other_buyer, other_saga = _awaiting_payment(server, buyers, other)  # holds stock of its own, untouched
    stripe_requests = stripe_request_counter(stripe_emulator)  # from here to the end of recovery: none
    request = pool.submit(buyer.cancel, saga.public_id)
    server.wait_paused()
    # The order is cancelled; the stock is still held. The buyer never paid: no PaymentIntent to cancel.
    at_kill = _saga(pk=saga.pk)
    assert at_kill.compensate_to == "cancelled" and at_kill.order.status == "cancelled"
    assert at_kill.payment_intent_id == "" and _stock(product) == (10, 2)

    _killed_mid_request(server, request)
    _recover(server, saga.pk)

    saga = _saga(pk=saga.pk)
    assert saga.state == "cancelled" and saga.compensate_to == ""
    assert _stock(product) == (10, 0) and _held(saga.public_id) == 0
    assert _stock(other) == (10, 2) and _saga(pk=other_saga.pk).state == "awaiting_payment"
    cancelled_again = buyer.cancel(saga.public_id)  # the buyer's retry: already cancelled, nothing moves
    assert cancelled_again.status_code == 200, cancelled_again.text
    assert _stock(product) == (10, 0)
    assert stripe_requests() == 0  # the cancel, its recovery and the retry: not one Stripe call
    assert _intents(stripe_emulator) == [] and _succeeded(stripe_emulator) == 0
    _clean()
    assert other_buyer.cancel(other_saga.public_id).status_code == 200


def test_killed_mid_cancel_recovery_releases_the_stock_once_and_the_intent_stays_canceled(
    gunicorn_server, buyers, pool, stripe_emulator
):
    server = gunicorn_server("release:before")
    product = _product()
    buyer, saga = _awaiting_payment(server, buyers, product)
    intent_id = buyer.payment_intent(saga.public_id)  # a Stripe.js storefront asked for the PaymentIntent
    other = _product()
    other_buyer, other_saga = _awaiting_payment(server, buyers, other)  # holds stock of its own, untouched
    request = pool.submit(buyer.cancel, saga.public_id)
    server.wait_paused()
    # The PaymentIntent is canceled and the order cancelled; the stock is still held.
    at_kill = _saga(pk=saga.pk)
    assert at_kill.compensate_to == "cancelled" and at_kill.order.status == "cancelled"
    assert stripe_emulator.client().v1.payment_intents.retrieve(intent_id).status == "canceled"
    assert _stock(product) == (10, 2)

    _killed_mid_request(server, request)
    _recover(server, saga.pk)

    saga = _saga(pk=saga.pk)
    assert saga.state == "cancelled" and saga.compensate_to == "" and saga.payment_intent_id == intent_id
    assert _stock(product) == (10, 0) and _held(saga.public_id) == 0
    assert [(pi.id, pi.status) for pi in _intents(stripe_emulator)] == [(intent_id, "canceled")]
    assert _stock(other) == (10, 2) and _saga(pk=other_saga.pk).state == "awaiting_payment"
    assert _succeeded(stripe_emulator) == 0
    cancelled_again = buyer.cancel(saga.public_id)  # the buyer's retry: already cancelled, nothing moves
    assert cancelled_again.status_code == 200, cancelled_again.text
    assert _stock(product) == (10, 0)
    _clean()
    assert other_buyer.cancel(other_saga.public_id).status_code == 200


def test_killed_after_the_refund_recovery_records_it_and_refunds_once(gunicorn_server, buyers, pool, stripe_emulator):
    server = gunicorn_server("refund:after")
    product = _product(on_hand=2)
    buyer, saga = _awaiting_payment(server, buyers, product)
    # A Stripe.js storefront gets the PaymentIntent and the card is charged on Stripe's side (a client-side
    # confirm, its webhook lost: webhooks are off) while the hold lapses and another buyer takes both units:
    # the paid order cannot be filled, so the buyer's confirm expires it with a refund.
    intent_id = buyer.payment_intent(saga.public_id)
    stripe_emulator.client().v1.payment_intents.confirm(intent_id, params={"payment_method": "pm_card_visa"})
    reservation_release(holder=saga.public_id, status="EXPIRED")
    _, rival = _awaiting_payment(server, buyers, product)
    request = pool.submit(buyer.confirm, saga.public_id)
    server.wait_paused()
    # Stripe refunded; the saga has not recorded it.
    assert len(_refunds(stripe_emulator)) == 1
    at_kill = _saga(pk=saga.pk)
    assert at_kill.compensate_to == "expired" and (at_kill.step, at_kill.step_status) == ("refund", "about_to")
    assert at_kill.order.payment_status != "refunded"

    _killed_mid_request(server, request)
    _recover(server, saga.pk)

    saga = _saga(pk=saga.pk)
    assert saga.state == "expired" and saga.compensate_to == ""
    assert saga.order.status == "cancelled" and saga.order.payment_status == "refunded"
    assert saga.order.amount_refunded == saga.order.total
    refunds = _refunds(stripe_emulator)
    assert len(refunds) == 1 and refunds[0].amount == saga.order.total  # asked again, refunded once
    assert refunds[0].payment_intent == intent_id and saga.payment_intent_id == intent_id
    assert _succeeded(stripe_emulator) == 1 and len(_intents(stripe_emulator)) == 1  # the rival has none yet
    assert _held(saga.public_id) == 0 and _held(rival.public_id) == 2 and _stock(product) == (2, 2)
    _clean()
