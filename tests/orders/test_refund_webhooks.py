"""Stripe's news about refunds reaching the order: ``charge.refunded`` and ``refund.updated`` as the emulator
emits them, signed, through the real webhook endpoint and handler (payments/webhooks/), re-fetched from
Stripe, moving our refund rows, the payment and the order's ``refundedAmount`` / ``paymentStatus``."""

from __future__ import annotations

import json
import time

import pytest

from orders.models import Order, OrderOperation, Outbox
from orders.refunds import order_refund
from payments.errors import PaymentTransientError
from payments.models import Payment, Refund, WebhookEvent
from payments.webhooks.handlers import HANDLED_EVENT_TYPES, webhook_event_process
from stripe_emulator import sign
from tests.support.saga import invariants_hold, make_product, paid_order

pytestmark = pytest.mark.django_db(transaction=True)


def deliver(api_client, emulator, event: dict) -> WebhookEvent:  # noqa: ANN001
    """What Stripe's delivery and our worker do with one event: POST it signed, then process it."""
    body = json.dumps(event)
    response = api_client.post(
        "/api/webhooks/stripe",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body, emulator.secret, int(time.time())),
    )
    assert response.status_code == 200, response.content
    return webhook_event_process(event_id=event["id"])


def latest(emulator, event_type: str) -> dict:  # noqa: ANN001
    return emulator.events(event_type)[-1]


def order_view(client, order_id: str) -> dict:  # noqa: ANN001
    return client.get(f"/api/orders/{order_id}").json()


def test_refund_events_are_handled():
    assert {"charge.refunded", "refund.updated"} <= set(HANDLED_EVENT_TYPES)


def test_a_refund_that_fails_days_later_gives_the_amount_back_to_the_order(stripe_emulator, api_client):
    """The card network refuses the refund after it succeeded: ``refund.updated`` (re-fetched) marks our row
    failed, the payment's refunded and taken amounts go back down, the order shows it, and the amount can
    be refunded again."""
    client, order_id = paid_order((make_product(price=1000), 1))
    done = order_refund(order_id=order_id, amount=600, reason="broken", actor="s")
    assert deliver(api_client, stripe_emulator, latest(stripe_emulator, "charge.refunded")).status == "processed"
    assert order_view(client, order_id)["refundedAmount"] == 600  # the duplicate news changes nothing

    stripe_emulator.settle_refund(done.refund.stripe_refund_id, "failed")
    assert deliver(api_client, stripe_emulator, latest(stripe_emulator, "refund.updated")).status == "processed"
    refund = Refund.objects.get()
    assert (refund.status, refund.failure_reason) == ("failed", "expired_or_canceled_card")
    payment = Payment.objects.get(order_id=order_id)
    assert (payment.amount_refunded, payment.refund_reserved) == (0, 0)
    view = order_view(client, order_id)
    assert (view["paymentStatus"], view["refundedAmount"]) == ("paid", 0)
    invariants_hold()

    again = order_refund(order_id=order_id, reason="refund it again", actor="s")
    assert (again.refund.seq, again.refund.amount) == (2, 1000)
    assert order_view(client, order_id)["paymentStatus"] == "refunded"


def test_a_pending_refund_that_succeeds_is_recorded_once(stripe_emulator, api_client):
    client, order_id = paid_order((make_product(price=1000), 1))
    done = order_refund(order_id=order_id, amount=250, reason="late", actor="s")
    stripe_emulator.settle_refund(done.refund.stripe_refund_id, "pending")
    stripe_emulator.settle_refund(done.refund.stripe_refund_id, "succeeded")
    pending, succeeded = stripe_emulator.events("refund.updated")[-2:]
    deliver(api_client, stripe_emulator, succeeded)
    deliver(api_client, stripe_emulator, pending)  # out of order: a stale "pending" moves nothing back
    assert Refund.objects.get().status == "succeeded"
    assert order_view(client, order_id)["refundedAmount"] == 250
    assert Outbox.objects.filter(event_type="order.refunded").count() == 1
    invariants_hold()


def test_a_refund_made_in_stripes_dashboard_reaches_the_order_and_caps_ours(stripe_emulator, api_client):
    client, order_id = paid_order((make_product(price=1000), 1))
    intent_id = Order.objects.get(public_id=order_id).payment_intent_id
    stripe_emulator.client().v1.refunds.create(params={"payment_intent": intent_id, "amount": 300})
    deliver(api_client, stripe_emulator, latest(stripe_emulator, "charge.refunded"))
    view = order_view(client, order_id)
    assert (view["paymentStatus"], view["refundedAmount"]) == ("partially_refunded", 300)
    [event] = Outbox.objects.filter(event_type="order.refunded")
    assert event.payload == {"orderId": order_id, "refundedAmount": 300, "currency": "usd"}
    assert not Refund.objects.exists()  # not one of ours: nothing to number

    rest = order_refund(order_id=order_id, reason="the rest", actor="s")
    assert rest.refund.amount == 700
    assert order_view(client, order_id)["paymentStatus"] == "refunded"
    invariants_hold()


def test_charge_refunded_finishes_a_refund_whose_answer_was_lost(stripe_emulator, api_client):
    """Stripe made the refund but its answer was lost: the ``charge.refunded`` it sends asks again with the
    refund's own key, which names the refund Stripe made; no second refund, the operation done."""
    client, order_id = paid_order((make_product(price=1000), 1))
    stripe_emulator.add_fault("POST /v1/refunds", "lose_response", times=3)  # stripe-python retries twice
    with pytest.raises(PaymentTransientError):
        order_refund(order_id=order_id, amount=400, reason="dented", actor="s")
    stripe_emulator.clear_faults()
    assert Refund.objects.get().status == "requested"

    deliver(api_client, stripe_emulator, latest(stripe_emulator, "charge.refunded"))
    refund = Refund.objects.get()
    assert refund.status == "succeeded" and refund.stripe_refund_id
    assert len(stripe_emulator.events("refund.created")) == 1
    assert OrderOperation.objects.get().status == "done"
    assert order_view(client, order_id)["refundedAmount"] == 400
    invariants_hold()
