"""Cancelling a paid order (orders/cancellation.py) against the real emulator and PostgreSQL: what is left is
refunded (or an authorization voided), the stock comes back as audited stock adjustments, the order ends
``cancelled`` with who and why recorded, once, even when two staff cancel at the same moment; and
``check_invariants`` notices a cancellation whose stock or money did not come back."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from inventory.models import StockAdjustment
from inventory.services import reservation_commit
from orders.cancellation import CancelOutcome, order_cancel_paid
from orders.errors import OrderNotCancellable, OrderNotFound
from orders.models import CheckoutSaga, Order, OrderOperation, Outbox
from orders.refunds import order_refund
from orders.services import outbox_process_pending
from payments.errors import RefundInProgress
from payments.gateway import payment_intent_retrieve
from payments.models import Payment, Refund
from payments.services import payment_sync_from_intent
from tests.support.saga import guest_with_cart, invariants_hold, make_product, paid_order, stock
from tests.support.threads import race

pytestmark = pytest.mark.django_db(transaction=True)


def stripe_refunds(emulator, intent_id: str) -> list[int]:  # noqa: ANN001
    state = emulator.server.state
    with state.lock:
        return [r["amount"] for r in state.refunds.values() if r["payment_intent"] == intent_id]


def intent_of(order_id: str) -> str:
    return Order.objects.get(public_id=order_id).payment_intent_id


def test_cancelling_a_paid_order_refunds_the_rest_puts_the_stock_back_and_records_it(
    stripe_emulator, django_user_model
):
    staff = django_user_model.objects.create_user(username="carol", password="x", is_staff=True)
    shirt, mug = make_product(price=1000, on_hand=10), make_product(price=500, on_hand=10)
    client, order_id = paid_order((shirt, 2), (mug, 1))
    order_refund(order_id=order_id, amount=300, reason="goodwill", actor=staff)
    assert stock(shirt) == (8, 0) and stock(mug) == (9, 0)

    done = order_cancel_paid(order_id=order_id, reason="customer changed their mind", actor=staff)
    assert not done.already and done.order.status == "cancelled"
    assert stripe_refunds(stripe_emulator, intent_of(order_id)) == [300, 2200]
    assert stock(shirt) == (10, 0) and stock(mug) == (10, 0)
    adjustments = StockAdjustment.objects.filter(reference=f"order:{order_id}:cancel").order_by("product_id")
    assert [(a.product_id, a.delta, a.who_id) for a in adjustments] == [(shirt.id, 2, staff.pk), (mug.id, 1, staff.pk)]
    assert all(a.reason == f"order {order_id} cancelled: customer changed their mind" for a in adjustments)

    view = client.get(f"/api/orders/{order_id}").json()
    assert (view["status"], view["paymentStatus"], view["refundedAmount"]) == ("cancelled", "refunded", 2500)
    cancel = OrderOperation.objects.get(kind="cancel")
    assert (cancel.actor_id, cancel.reason, cancel.restock, cancel.status, cancel.refund_seq) == (
        staff.pk,
        "customer changed their mind",
        True,
        "done",
        2,
    )
    assert "refunded 22.00 USD" in cancel.outcome and "stock put back" in cancel.outcome
    [event] = Outbox.objects.filter(event_type="order.cancelled")
    assert event.payload == {"orderId": order_id, "reason": "customer changed their mind", "restocked": True}
    assert Payment.objects.get(order_id=order_id).order_cancelled_at is not None
    invariants_hold()

    again = order_cancel_paid(order_id=order_id, reason="clicked twice", actor="someone else")
    assert again.already and again.operation.pk == cancel.pk
    assert stripe_refunds(stripe_emulator, intent_of(order_id)) == [300, 2200]
    assert stock(shirt) == (10, 0) and StockAdjustment.objects.count() == 2
    assert Outbox.objects.filter(event_type="order.cancelled").count() == 1


def test_without_restock_the_money_comes_back_and_the_stock_stays(stripe_emulator):
    product = make_product(price=1000, on_hand=4)
    client, order_id = paid_order((product, 3))
    done = order_cancel_paid(order_id=order_id, restock=False, reason="lost in the post", actor="ops")
    assert done.order.status == "cancelled" and done.operation.restock is False
    assert stripe_refunds(stripe_emulator, intent_of(order_id)) == [3000]
    assert stock(product) == (1, 0) and not StockAdjustment.objects.exists()
    invariants_hold()


def test_two_staff_cancelling_at_once_refund_once_and_restock_once(stripe_emulator):
    """Both run the whole cancellation at the same moment (the refund held open at Stripe, so they overlap
    in it): they share one cancellation row, Stripe refunds once, the stock comes back once. A loser that
    found the refund still unanswered says so; running it again then reports the cancellation done."""
    product = make_product(price=1000, on_hand=5)
    client, order_id = paid_order((product, 2))
    stripe_emulator.add_fault("POST /v1/refunds", "latency", times=1, ms=300)
    results = race(2, lambda i: order_cancel_paid(order_id=order_id, reason=f"desk {i}", actor=f"staff {i}"))
    assert all(isinstance(r, CancelOutcome | RefundInProgress) for r in results), results
    assert any(isinstance(r, CancelOutcome) for r in results), results

    final = order_cancel_paid(order_id=order_id, reason="check", actor="staff 2")
    assert final.order.status == "cancelled" and final.operation.status == "done"
    assert stripe_refunds(stripe_emulator, intent_of(order_id)) == [2000]
    assert Refund.objects.count() == 1
    assert stock(product) == (5, 0)
    assert StockAdjustment.objects.filter(product=product).count() == 1
    assert OrderOperation.objects.filter(kind="cancel").count() == 1
    assert Outbox.objects.filter(event_type="order.cancelled").count() == 1
    invariants_hold()


def test_an_order_cancelled_before_its_fulfilment_ran_stays_cancelled(stripe_emulator):
    product = make_product(price=1000, on_hand=5)
    client, order_id = paid_order((product, 1), fulfil=False)
    assert Order.objects.get(public_id=order_id).status == "confirmed"
    order_cancel_paid(order_id=order_id, reason="cancelled before dispatch", actor="ops")
    outbox_process_pending()  # the fulfilment waiting in the outbox runs now
    assert Order.objects.get(public_id=order_id).status == "cancelled"
    assert CheckoutSaga.objects.get(order__public_id=order_id).state == "fulfilled"
    invariants_hold()


def test_an_uncaptured_authorization_is_voided_not_refunded(stripe_emulator):
    """An order confirmed on an authorization (``requires_capture``, as manual capture leaves it): cancelling
    cancels the PaymentIntent at Stripe, refunds nothing, and puts the stock back."""
    product = make_product(price=1000, on_hand=5)
    client = guest_with_cart((product, 1))
    started = client.post("/api/checkout/start", {}, format="json").json()
    order_id, checkout_id = started["orderId"], started["checkoutId"]
    intent = stripe_emulator.client().v1.payment_intents.create(
        params={
            "amount": 1000,
            "currency": "usd",
            "capture_method": "manual",
            "confirm": True,
            "payment_method": "pm_card_visa",
            "metadata": {"order_id": order_id, "checkout_id": checkout_id},
        }
    )
    assert intent.status == "requires_capture"
    # What a confirm on an authorization leaves behind: the payment authorized, the order confirmed, the stock sold.
    payment_sync_from_intent(intent=payment_intent_retrieve(intent_id=intent.id))
    Order.objects.filter(public_id=order_id).update(
        status="confirmed", payment_status="requires_capture", payment_intent_id=intent.id
    )
    CheckoutSaga.objects.filter(public_id=checkout_id).update(state="confirmed", payment_intent_id=intent.id)
    reservation_commit(holder=checkout_id)
    assert client.get(f"/api/orders/{order_id}").json()["paymentStatus"] == "authorized"

    done = order_cancel_paid(order_id=order_id, reason="fraud check failed", actor="ops")
    assert "voided" in done.operation.outcome
    assert payment_intent_retrieve(intent_id=intent.id).status == "canceled"
    assert stripe_refunds(stripe_emulator, intent.id) == [] and not Refund.objects.exists()
    assert stock(product) == (5, 0)
    view = client.get(f"/api/orders/{order_id}").json()
    assert (view["status"], view["paymentStatus"], view["refundedAmount"]) == ("cancelled", "unpaid", 0)
    invariants_hold()


def test_bad_input_is_refused_with_a_clear_error_and_changes_nothing(stripe_emulator):
    with pytest.raises(OrderNotFound):
        order_cancel_paid(order_id="ord_nosuchorder", reason="x", actor="ops")
    product = make_product(price=1000, on_hand=5)
    client = guest_with_cart((product, 2))
    order_id = client.post("/api/checkout/start", {}, format="json").json()["orderId"]
    with pytest.raises(OrderNotCancellable) as refused:
        order_cancel_paid(order_id=order_id, reason="x", actor="ops")
    assert refused.value.extensions == {
        "orderId": order_id,
        "orderStatus": "awaiting_payment",
        "paymentStatus": "unpaid",
    }
    assert "cancelled by the buyer" in refused.value.detail
    assert not OrderOperation.objects.exists() and not StockAdjustment.objects.exists()
    assert Order.objects.get(public_id=order_id).status == "awaiting_payment"
    assert stock(product) == (5, 2)  # the checkout still holds its stock


def test_check_invariants_notices_a_cancellation_whose_stock_or_money_did_not_come_back(stripe_emulator):
    product = make_product(price=1000, on_hand=5)
    client, order_id = paid_order((product, 2))
    order_cancel_paid(order_id=order_id, reason="returned", actor="ops")
    invariants_hold()

    StockAdjustment.objects.filter(reference=f"order:{order_id}:cancel").delete()  # as if never put back
    with pytest.raises(CommandError):
        call_command("check_invariants")

    other_client, other = paid_order((make_product(price=800, on_hand=5), 1))
    OrderOperation.objects.create(
        order=Order.objects.get(public_id=other), kind="cancel", restock=True, reason="x", actor_label="ops"
    )
    an_hour_ago = Order.objects.get(public_id=other).created_at - timedelta(hours=1)
    OrderOperation.objects.filter(order__public_id=other).update(created_at=an_hour_ago)  # started, then died
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("check_invariants", stderr=err)
    report = err.getvalue()
    assert f"order {order_id}: cancelled with restock, but the stock put back is nothing" in report
    assert f"run manage.py cancel_order {other}" in report
