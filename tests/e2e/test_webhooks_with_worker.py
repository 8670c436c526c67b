"""End to end with a REAL Celery worker: the emulator signs and posts webhooks to a live server, the worker
processes them against the emulator. Duplicates and reversed delivery converge on one state."""

from __future__ import annotations

import pytest

from orders.models import CheckoutSaga, Order
from payments.gateway import payment_intent_confirm, payment_intent_create
from payments.models import WebhookEvent
from payments.selectors import payment_get

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]
HANDLED = ("payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded")


def _settled() -> bool:
    return WebhookEvent.objects.exists() and not WebhookEvent.objects.filter(status="received").exists()


def test_duplicated_and_reversed_webhooks_converge_through_the_worker(
    celery_worker_process, stripe_emulator, live_server
):
    stripe_emulator.set_webhook_url(f"{live_server.url}/api/webhooks/stripe")
    stripe_emulator.webhooks("pause")
    order_id = "ord_e2e"
    # The worker runs the whole app, so the orders listener (orders/saga/listeners.py saga_on_intent) sees these events
    # too. An order whose checkout is not this intent's is acknowledged by it; with no order at all it raises
    # NotKnownYet, and every delivery of a still-pending event starts another retry chain of
    # CARTFLOW_WEBHOOK_MAX_RETRIES runs, each re-fetching the intent: work that grows with the deliveries and,
    # on a loaded machine, outlasted the wait below. NotKnownYet's retries and parking have their own tests
    # in tests/payments/test_webhooks.py.
    order = Order.objects.create(public_id=order_id, cart_key="cart:e2e", currency="usd", subtotal=5000, total=5000)
    CheckoutSaga.objects.create(order=order, cart_key="cart:e2e", currency="usd", state=CheckoutSaga.State.EXPIRED)
    intent = payment_intent_create(order_id=order_id, checkout_id="chk_e2e", amount=5000, currency="usd")
    payment_intent_confirm(
        order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa_chargeDeclined", attempt=1
    )
    payment_intent_confirm(order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=2)
    # Every event three times, then the whole backlog delivered newest first.
    for event in stripe_emulator.events():
        stripe_emulator.webhooks("redeliver", event_id=event["id"], times=2)
    stripe_emulator.webhooks("resume", order="reverse")
    assert stripe_emulator.wait_for_webhooks(timeout=20)

    celery_worker_process.wait_for(_settled, timeout=30)
    events = stripe_emulator.events()
    assert WebhookEvent.objects.count() == len(events)  # stored once each, whatever the deliveries
    for event in WebhookEvent.objects.filter(type__in=HANDLED):
        assert (event.status, event.last_error) == ("processed", ""), (event.type, event.status, event.last_error)
    payment = payment_get(order_id=order_id)
    assert (payment.status, payment.intent_id, payment.amount) == ("succeeded", intent.intent_id, 5000)
    accepted = [d["event_id"] for d in stripe_emulator.deliveries() if d["ok"]]
    assert sorted(accepted) == sorted([e["id"] for e in events] * 3)  # each event answered 200 three times
