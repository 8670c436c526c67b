"""End to end: a live server, a REAL Celery worker, real PostgreSQL and Redis, and the Stripe emulator
delivering signed webhooks to the live server, everything through real HTTP (httpx).

The server (pytest-django's ``live_server``, a threaded WSGI server in this process), the worker and the
emulator are session-scoped; each test gets a reset emulator aimed at the server. Every test ends by
waiting for the webhooks and the worker to settle, then asserts ``check_invariants`` is clean and counts
the charges the emulator made (exactly one or zero).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from inventory.models import Product, Reservation, Stock
from orders.models import CheckoutSaga, Order, Outbox
from payments.models import WebhookEvent
from payments.webhooks.handlers import HANDLED_EVENT_TYPES

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

# A checkout's first payment creates and confirms its PaymentIntent in one call (the deferred-intent flow).
CONFIRM = "POST /v1/payment_intents"


class Shop:
    """One buyer's storefront session against the live server (the cookie jar keeps the cart token)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url + "/api", timeout=30)

    def add(self, product: Product, quantity: int = 1) -> httpx.Response:
        response = self.http.post("/cart/items", json={"productId": product.id, "quantity": quantity})
        assert response.status_code == 201, response.text
        self.http.headers["X-Cart-Token"] = response.json()["token"]
        return response

    def start(self, **headers: str) -> httpx.Response:
        return self.http.post("/checkout/start", json={"email": "buyer@example.com"}, headers=headers)

    def confirm(self, pm: str = "pm_card_visa", checkout_id: str | None = None, **headers: str) -> httpx.Response:
        body = {"paymentMethodId": pm, **({"checkoutId": checkout_id} if checkout_id else {})}
        return self.http.post("/checkout/confirm", json=body, headers=headers)

    def checkout(self, checkout_id: str) -> dict[str, Any]:
        response = self.http.get(f"/checkout/{checkout_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def order(self, order_id: str) -> dict[str, Any]:
        response = self.http.get(f"/orders/{order_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def cart_items(self) -> list[dict[str, Any]]:
        return self.http.get("/cart").json()["items"]


@pytest.fixture
def e2e(celery_worker_process, stripe_emulator, live_server, settings) -> Iterator[Any]:
    """The emulator posts its webhooks to the live server; the worker processes them and the outbox."""
    stripe_emulator.set_webhook_url(f"{live_server.url}/api/webhooks/stripe", events=HANDLED_EVENT_TYPES)
    yield stripe_emulator
    stripe_emulator.clear_faults()
    stripe_emulator.webhooks("resume")


@pytest.fixture
def shop(live_server) -> Iterator[Callable[[], Shop]]:
    made: list[Shop] = []

    def make() -> Shop:
        made.append(Shop(live_server.url))
        return made[-1]

    yield make
    for s in made:
        s.http.close()


def _product(*, price: int = 2500, on_hand: int = 10) -> Product:
    product = Product.objects.create(sku=f"E2E-{uuid.uuid4().hex[:8]}", name="T-shirt", price=price, currency="usd")
    Stock.objects.create(product=product, on_hand=on_hand)
    return product


def _stock(product: Product) -> tuple[int, int]:
    row = Stock.objects.get(product=product)
    return row.on_hand, row.reserved


def _wait(predicate: Callable[[], Any], worker, timeout: float = 20.0) -> Any:  # noqa: ANN001
    return worker.wait_for(predicate, timeout=timeout, interval=0.05)


def _state(checkout_id: str) -> str:
    return CheckoutSaga.objects.get(public_id=checkout_id).state


def _settle(emulator, worker) -> None:  # noqa: ANN001
    """Every webhook delivered and processed, every outbox event consumed."""
    assert emulator.wait_for_webhooks(timeout=20)
    _wait(
        lambda: (
            not WebhookEvent.objects.filter(status="received").exists()
            and not Outbox.objects.filter(processed_at__isnull=True).exists()
        ),
        worker,
    )
    assert not WebhookEvent.objects.filter(status__in=["failed", "parked"]).exists(), list(
        WebhookEvent.objects.values_list("type", "status", "last_error")
    )


def _charges(emulator) -> int:  # noqa: ANN001
    return len(emulator.events("charge.succeeded"))


def _end(emulator, worker, *, charges: int) -> None:  # noqa: ANN001
    _settle(emulator, worker)
    call_command("check_invariants")  # raises CommandError listing every violation
    assert _charges(emulator) == charges
    assert len(emulator.events("charge.refunded")) == 0


# --- the flows ---------------------------------------------------------------------------------------------


def test_seed_curl_flow_fulfils_through_the_outbox_and_clears_the_cart(e2e, shop, celery_worker_process):
    product = _product(price=2500)
    buyer = shop()
    listed = buyer.http.get("/products", params={"sku": product.sku}).json()["results"]
    assert [(p["id"], p["available"]) for p in listed] == [(product.id, 10)]
    added = buyer.add(product, 2).json()
    assert added["subtotal"] == 5000 and added["currency"] == "usd"
    assert [i["quantity"] for i in buyer.cart_items()] == [2]

    start = buyer.start(**{"Idempotency-Key": uuid.uuid4().hex})
    assert start.status_code == 201, start.text
    body = start.json()
    assert (body["status"], body["amount"], body["currency"]) == ("awaiting_payment", 5000, "usd")
    assert _stock(product) == (10, 2)

    confirm = buyer.confirm("pm_card_visa", **{"Idempotency-Key": uuid.uuid4().hex})
    assert confirm.status_code == 200, confirm.text
    assert confirm.json()["status"] in ("confirmed", "fulfilled")
    assert confirm.json()["orderId"] == body["orderId"]

    # Fulfilment runs in the worker, from the outbox: the order ends fulfilled and the cart empty.
    _wait(lambda: buyer.order(body["orderId"])["status"] == "fulfilled", celery_worker_process)
    order = buyer.order(body["orderId"])
    assert (order["paymentStatus"], order["total"], order["refundedAmount"]) == ("paid", 5000, 0)
    assert buyer.cart_items() == []
    assert _stock(product) == (8, 0)
    steps = [s["name"] for s in buyer.checkout(body["checkoutId"])["steps"] if s["status"] == "done"]
    assert steps[-3:] == ["charge", "confirm", "fulfil"]
    _end(e2e, celery_worker_process, charges=1)


def test_decline_keeps_the_checkout_open_then_another_card_pays(e2e, shop, celery_worker_process):
    product = _product()
    buyer = shop()
    buyer.add(product, 1)
    checkout_id = buyer.start().json()["checkoutId"]

    declined = buyer.confirm("pm_card_visa_chargeDeclined")
    assert declined.status_code == 402, declined.text
    problem = declined.json()
    assert declined.headers["content-type"].startswith("application/problem+json")
    assert (problem["code"], problem["declineCode"]) == ("payment_declined", "generic_decline")
    assert _state(checkout_id) == "awaiting_payment" and _stock(product) == (10, 1)

    paid = buyer.confirm("pm_card_mastercard")
    assert paid.status_code == 200, paid.text
    _wait(lambda: _state(checkout_id) == "fulfilled", celery_worker_process)
    assert _stock(product) == (9, 0)
    assert len(e2e.events("charge.failed")) == 1
    _end(e2e, celery_worker_process, charges=1)


def test_three_d_secure_is_finished_by_the_webhook_through_the_worker(e2e, shop, celery_worker_process):
    product = _product()
    buyer = shop()
    buyer.add(product, 1)
    checkout_id = buyer.start().json()["checkoutId"]

    pending = buyer.confirm("pm_card_threeDSecure2Required")
    assert pending.status_code == 202, pending.text
    body = pending.json()
    assert body["status"] == "requires_action" and body["nextAction"]["type"] == "use_stripe_sdk"
    assert body["paymentClientSecret"]

    # The buyer authenticates in the browser; Stripe tells us through the webhook only.
    intent_id = Order.objects.get(public_id=body["orderId"]).payment_intent_id
    e2e.authenticate(intent_id, "succeed")
    _wait(lambda: _state(checkout_id) == "fulfilled", celery_worker_process)
    assert buyer.order(body["orderId"])["paymentStatus"] == "paid"
    assert _stock(product) == (9, 0) and buyer.cart_items() == []
    _end(e2e, celery_worker_process, charges=1)


def test_concurrent_confirms_of_one_checkout_charge_once(e2e, shop, celery_worker_process):
    product = _product()
    buyer = shop()
    buyer.add(product, 2)
    checkout_id = buyer.start().json()["checkoutId"]
    e2e.add_fault(CONFIRM, "latency", ms=300)  # widen the window: every request arrives while one charges

    token = buyer.http.headers["X-Cart-Token"]
    barrier = threading.Barrier(6)
    results: list[httpx.Response] = []

    def confirm() -> None:
        with httpx.Client(base_url=buyer.http.base_url, timeout=30, headers={"X-Cart-Token": token}) as client:
            barrier.wait()
            results.append(client.post("/checkout/confirm", json={"paymentMethodId": "pm_card_visa"}))

    threads = [threading.Thread(target=confirm) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {200, 409} and 200 in codes, [(r.status_code, r.text[:200]) for r in results]
    for r in results:
        if r.status_code == 200:
            assert r.json()["checkoutId"] == checkout_id and r.json()["status"] in ("confirmed", "fulfilled")
        else:
            assert r.json()["code"] in ("checkout_in_progress", "checkout_not_confirmable"), r.text
    _wait(lambda: _state(checkout_id) == "fulfilled", celery_worker_process)
    assert _stock(product) == (8, 0)
    assert len(e2e.events("payment_intent.succeeded")) == 1
    _end(e2e, celery_worker_process, charges=1)


def test_idempotency_key_replays_rejects_reuse_and_reports_in_progress(e2e, shop, celery_worker_process):
    product = _product()
    buyer = shop()
    buyer.add(product, 1)
    key = uuid.uuid4().hex
    first = buyer.start(**{"Idempotency-Key": key})
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    replay = buyer.start(**{"Idempotency-Key": key})
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    checkout_id = first.json()["checkoutId"]

    # The first confirm is held in Stripe for 1.5 s; the same key meanwhile → 409 with Retry-After.
    e2e.add_fault(CONFIRM, "latency", ms=1500)
    confirm_key = uuid.uuid4().hex
    held: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: held.append(buyer.confirm("pm_card_visa", **{"Idempotency-Key": confirm_key}))
    )
    worker.start()
    _wait(lambda: e2e.faults() == [], celery_worker_process, timeout=10)  # the latency fault fired: it is in flight
    busy = buyer.confirm("pm_card_visa", **{"Idempotency-Key": confirm_key})
    worker.join()
    assert busy.status_code == 409, busy.text
    assert busy.json()["code"] == "idempotency_request_in_progress" and int(busy.headers["Retry-After"]) >= 1
    assert held[0].status_code == 200, held[0].text

    again = buyer.confirm("pm_card_visa", **{"Idempotency-Key": confirm_key})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["checkoutId"] == checkout_id
    reused = buyer.confirm("pm_card_mastercard", **{"Idempotency-Key": confirm_key})
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"

    _wait(lambda: _state(checkout_id) == "fulfilled", celery_worker_process)
    _end(e2e, celery_worker_process, charges=1)


def test_expiry_with_a_short_ttl_costs_stripe_nothing(e2e, shop, celery_worker_process, settings):
    settings.CARTFLOW_RESERVATION_TTL_SECONDS = 1  # the live server runs in this process: it sees this
    product = _product(on_hand=3)
    buyer = shop()
    buyer.add(product, 3)
    start = buyer.start().json()
    assert _stock(product) == (3, 3)
    expires_at = max(Reservation.objects.filter(holder=start["checkoutId"]).values_list("expires_at", flat=True))
    while timezone.now() <= expires_at:  # wait for the hold's own expiry time, whatever the machine's speed
        time.sleep(0.05)
    call_command("release_expired_reservations")

    assert _state(start["checkoutId"]) == "expired"
    assert _stock(product) == (3, 0)
    late = buyer.confirm("pm_card_visa")
    assert late.status_code == 409 and late.json()["code"] == "reservation_expired", late.text
    assert e2e.events() == []  # abandoned before paying: no intent was ever created, nothing to cancel
    assert buyer.order(start["orderId"])["status"] == "cancelled"
    _end(e2e, celery_worker_process, charges=0)


def _lose_confirm_response(emulator, settings) -> None:  # noqa: ANN001
    """Stripe creates the intent and charges, but the answer never arrives, nor that of the replay right after."""
    settings.STRIPE_MAX_NETWORK_RETRIES = 0  # the client must not quietly replay the lost response
    emulator.add_fault(CONFIRM, "lose_response", times=2)


def test_lost_stripe_response_is_recovered_by_the_webhook(e2e, shop, celery_worker_process, settings):
    product = _product()
    buyer = shop()
    buyer.add(product, 1)
    checkout_id = buyer.start().json()["checkoutId"]
    e2e.webhooks("pause")  # so the HTTP path sees its failures before the webhook can settle anything
    _lose_confirm_response(e2e, settings)

    lost = buyer.confirm("pm_card_visa")
    assert lost.status_code == 503 and lost.json()["code"] == "payment_provider_unavailable", lost.text
    saga = CheckoutSaga.objects.get(public_id=checkout_id)
    assert (saga.step, saga.step_status, saga.state) == ("charge", "indeterminate", "awaiting_payment")

    e2e.webhooks("resume")
    _wait(lambda: _state(checkout_id) == "fulfilled", celery_worker_process)
    assert _stock(product) == (9, 0)
    again = buyer.confirm("pm_card_visa", checkout_id)  # the buyer retries: the same order, no second charge
    assert again.status_code == 200 and again.json()["status"] == "fulfilled", again.text
    _end(e2e, celery_worker_process, charges=1)


def test_lost_stripe_response_is_recovered_by_recover_sagas(e2e, shop, celery_worker_process, settings):
    product = _product()
    buyer = shop()
    buyer.add(product, 1)
    checkout_id = buyer.start().json()["checkoutId"]
    e2e.webhooks("pause")  # no webhook comes to the rescue
    _lose_confirm_response(e2e, settings)
    assert buyer.confirm("pm_card_visa").status_code == 503

    call_command("recover_sagas")
    assert _state(checkout_id) in ("confirmed", "fulfilled")
    _wait(lambda: _state(checkout_id) == "fulfilled", celery_worker_process)
    assert _stock(product) == (9, 0) and buyer.cart_items() == []

    e2e.webhooks("resume")  # the late webhooks change nothing
    _end(e2e, celery_worker_process, charges=1)
    assert _state(checkout_id) == "fulfilled"


def test_cancel_releases_stock_and_cancels_the_intent(e2e, shop, celery_worker_process):
    product = _product()
    buyer = shop()
    buyer.add(product, 4)
    start = buyer.start().json()
    assert _stock(product) == (10, 4)
    intent = buyer.http.post(f"/checkout/{start['checkoutId']}/payment-intent")  # a Stripe.js storefront
    assert intent.status_code == 200, intent.text

    cancelled = buyer.http.post(f"/checkout/{start['checkoutId']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    assert _stock(product) == (10, 0)
    assert [e["data"]["object"]["id"] for e in e2e.events("payment_intent.canceled")] == [
        intent.json()["paymentIntentId"]
    ]
    late = buyer.confirm("pm_card_visa", checkout_id=start["checkoutId"])
    assert late.status_code == 409 and late.json()["code"] == "checkout_not_confirmable", late.text
    assert buyer.order(start["orderId"])["status"] == "cancelled"
    assert [i["quantity"] for i in buyer.cart_items()] == [4]  # the cart is kept for another try
    _end(e2e, celery_worker_process, charges=0)


def test_stripe_js_storefront_confirms_on_the_client_and_the_webhook_finishes(e2e, shop, celery_worker_process):
    product = _product(price=1800)
    buyer = shop()
    buyer.add(product, 2)
    start = buyer.start().json()
    first = buyer.http.post(f"/checkout/{start['checkoutId']}/payment-intent")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["amount"] == 3600 and body["currency"] == "usd"
    assert body["paymentClientSecret"].startswith(body["paymentIntentId"])
    assert buyer.http.post(f"/checkout/{start['checkoutId']}/payment-intent").json() == body  # the same intent
    stranger = shop()
    stranger.add(product, 1)
    assert stranger.http.post(f"/checkout/{start['checkoutId']}/payment-intent").status_code == 404

    # Stripe.js confirms in the browser; CartFlow hears of it through the webhook only.
    e2e.client().v1.payment_intents.confirm(body["paymentIntentId"], params={"payment_method": "pm_card_visa"})
    _wait(lambda: _state(start["checkoutId"]) == "fulfilled", celery_worker_process)
    assert buyer.order(start["orderId"])["paymentStatus"] == "paid"
    assert _stock(product) == (8, 0) and buyer.cart_items() == []
    assert len(e2e.events("payment_intent.created")) == 1
    _end(e2e, celery_worker_process, charges=1)
