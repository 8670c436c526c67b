"""Refunds of a paid order (orders/refunds.py over payments/refunds.py), against the real emulator over HTTP
and the real PostgreSQL: full and partial, never more than was paid even when two staff refund at once,
a lost Stripe answer finished with the same key instead of refunding twice, and bad input refused with
nothing changed."""

from __future__ import annotations

import threading

import pytest

from orders.errors import OrderNotFound, OrderNotRefundable
from orders.models import Order, OrderOperation, Outbox
from orders.refunds import RefundOutcome, order_refund
from payments import refunds as payment_refunds
from payments.errors import PaymentTransientError, RefundExceedsRemaining, RefundFailed, RefundInProgress
from payments.models import Payment, Refund
from payments.refunds import refund_reserve
from tests.support.saga import guest_with_cart, invariants_hold, make_product, paid_order
from tests.support.threads import race

pytestmark = pytest.mark.django_db(transaction=True)


def stripe_refunds(emulator, order_id: str) -> list[dict]:  # noqa: ANN001
    """The refunds the emulator made for the order's PaymentIntent, oldest first."""
    intent_id = Order.objects.get(public_id=order_id).payment_intent_id
    state = emulator.server.state
    with state.lock:
        return [dict(r) for r in state.refunds.values() if r["payment_intent"] == intent_id]


def order_view(client, order_id: str) -> dict:  # noqa: ANN001
    response = client.get(f"/api/orders/{order_id}")
    assert response.status_code == 200, response.content
    return response.json()


def test_partial_refunds_add_up_to_what_was_paid_and_never_more(stripe_emulator, django_user_model):
    """Two partial refunds and then the rest: each a Stripe refund with its own key, the order showing what is
    refunded, who asked and why recorded, one ``order.refunded`` event each; then nothing is left."""
    staff = django_user_model.objects.create_user(username="alice", password="x", is_staff=True)
    client, order_id = paid_order((make_product(price=2500), 2))
    assert (order_view(client, order_id)["paymentStatus"], order_view(client, order_id)["refundedAmount"]) == (
        "paid",
        0,
    )

    first = order_refund(order_id=order_id, amount=1000, reason="scratched box", actor=staff)
    assert (first.refund.seq, first.refund.amount, first.refund.status) == (1, 1000, "succeeded")
    assert first.refund.idempotency_key == f"cf:{order_id}:refund:1"
    view = order_view(client, order_id)
    assert (view["status"], view["paymentStatus"], view["refundedAmount"]) == ("fulfilled", "partially_refunded", 1000)

    second = order_refund(order_id=order_id, amount=1500, reason="late delivery", actor="manage.py (bob)")
    rest = order_refund(order_id=order_id, reason="customer returned it", actor=staff)
    assert (second.refund.amount, rest.refund.amount, rest.refund.seq) == (1500, 2500, 3)
    view = order_view(client, order_id)
    assert (view["paymentStatus"], view["refundedAmount"], view["amountRefunded"]) == ("refunded", 5000, 5000)

    with pytest.raises(RefundExceedsRemaining) as refused:
        order_refund(order_id=order_id, amount=1, reason="one cent more", actor=staff)
    assert refused.value.extensions == {"orderId": order_id, "remaining": 0, "currency": "usd"}

    at_stripe = stripe_refunds(stripe_emulator, order_id)
    assert [(r["amount"], r["metadata"]) for r in at_stripe] == [
        (1000, {"order_id": order_id, "refund_seq": "1"}),
        (1500, {"order_id": order_id, "refund_seq": "2"}),
        (2500, {"order_id": order_id, "refund_seq": "3"}),
    ]
    operations = OrderOperation.objects.filter(order__public_id=order_id).order_by("pk")
    assert [(o.kind, o.actor_id, o.actor_label, o.reason, o.status, o.refund_seq) for o in operations] == [
        ("refund", staff.pk, "alice", "scratched box", "done", 1),
        ("refund", None, "manage.py (bob)", "late delivery", "done", 2),
        ("refund", staff.pk, "alice", "customer returned it", "done", 3),
    ]
    events = Outbox.objects.filter(event_type="order.refunded").order_by("pk")
    assert [e.payload["refundedAmount"] for e in events] == [1000, 2500, 5000]
    payment = Payment.objects.get(order_id=order_id)
    assert (payment.amount_refunded, payment.refund_reserved, payment.refund_seq) == (5000, 5000, 3)
    invariants_hold()


@pytest.mark.parametrize(("first", "second"), [(600, 600), (300, None)], ids=["partial+partial", "partial+full"])
def test_two_staff_refunding_at_once_never_refund_more_than_was_paid(stripe_emulator, monkeypatch, first, second):
    """Both read the payment before either writes (the test holds each at that point until the other has read
    too), so only the database can tell them apart: the version-checked reserve lets one through and the
    other reads again and is told a refund is in progress or what is left. Stripe is asked once per refund
    that fits, and never for one that does not."""
    client, order_id = paid_order((make_product(price=1000), 1))
    both_read = threading.Barrier(2, timeout=20)
    waited = threading.local()
    read = payment_refunds._payment_row

    def read_then_wait_for_the_other(oid: str):  # noqa: ANN202
        row = read(oid)
        if not getattr(waited, "done", False):
            waited.done = True
            both_read.wait()
        return row

    monkeypatch.setattr(payment_refunds, "_payment_row", read_then_wait_for_the_other)
    amounts = (first, second)
    results = race(2, lambda i: order_refund(order_id=order_id, amount=amounts[i], reason=f"desk {i}", actor=f"s{i}"))

    won = [r for r in results if isinstance(r, RefundOutcome)]
    assert won and all(isinstance(r, RefundOutcome | RefundInProgress | RefundExceedsRemaining) for r in results), (
        results
    )
    refunded = sum(r.refund.amount for r in won)
    assert refunded <= 1000
    assert sum(r["amount"] for r in stripe_refunds(stripe_emulator, order_id)) == refunded
    assert not Refund.objects.filter(status="failed").exists()  # Stripe never had to refuse an excess
    assert Payment.objects.get(order_id=order_id).refund_reserved == refunded

    monkeypatch.setattr(payment_refunds, "_payment_row", read)
    if refunded < 1000:
        order_refund(order_id=order_id, reason="the rest", actor="s0")
    with pytest.raises(RefundExceedsRemaining):
        order_refund(order_id=order_id, reason="more", actor="s1")
    assert sum(r["amount"] for r in stripe_refunds(stripe_emulator, order_id)) == 1000
    assert order_view(client, order_id)["refundedAmount"] == 1000
    invariants_hold()


def test_a_lost_stripe_answer_is_finished_with_the_same_key_not_refunded_twice(stripe_emulator):
    """Stripe refunds but the answer never arrives: the refund stays "requested", the operator is told to run
    it again; the second run asks Stripe with the same key, gets the same refund and starts nothing new."""
    client, order_id = paid_order((make_product(price=1000), 1))
    stripe_emulator.add_fault("POST /v1/refunds", "lose_response", times=3)  # stripe-python retries twice
    with pytest.raises(PaymentTransientError):
        order_refund(order_id=order_id, amount=400, reason="dented", actor="s")
    assert len(stripe_refunds(stripe_emulator, order_id)) == 1  # it did happen at Stripe
    assert Refund.objects.get().status == "requested"
    assert OrderOperation.objects.get().status == "started"
    stripe_emulator.clear_faults()

    again = order_refund(order_id=order_id, amount=400, reason="dented", actor="s")
    assert again.resumed and (again.refund.seq, again.refund.status) == (1, "succeeded")
    [made] = stripe_refunds(stripe_emulator, order_id)
    assert (made["id"], made["amount"]) == (again.refund.stripe_refund_id, 400)
    assert OrderOperation.objects.get().status == "done"
    assert order_view(client, order_id)["refundedAmount"] == 400
    invariants_hold()


def test_a_process_that_died_before_calling_stripe_is_finished_by_the_next_run(stripe_emulator):
    """The amount was reserved, then the process died before the Stripe call: the next run makes that very
    refund (its key, its amount) instead of a new one."""
    client, order_id = paid_order((make_product(price=1000), 1))
    refund_reserve(order_id=order_id, amount=250)  # what a run had done when it died
    assert stripe_refunds(stripe_emulator, order_id) == []
    done = order_refund(order_id=order_id, amount=900, reason="retry", actor="s")
    assert done.resumed and (done.refund.amount, done.refund.status) == (250, "succeeded")
    assert [r["amount"] for r in stripe_refunds(stripe_emulator, order_id)] == [250]
    assert order_view(client, order_id)["refundedAmount"] == 250


def test_bad_input_is_refused_with_a_clear_error_and_changes_nothing(stripe_emulator):
    client, order_id = paid_order((make_product(price=1000), 1))
    with pytest.raises(RefundExceedsRemaining) as too_much:
        order_refund(order_id=order_id, amount=1001, reason="typo", actor="s")
    assert "more than the 10.00 USD left" in too_much.value.detail
    with pytest.raises(OrderNotFound):
        order_refund(order_id="ord_nosuchorder", reason="x", actor="s")

    unpaid = guest_with_cart((make_product(price=700), 1))
    unpaid_id = unpaid.post("/api/checkout/start", {}, format="json").json()["orderId"]
    with pytest.raises(OrderNotRefundable) as not_paid:
        order_refund(order_id=unpaid_id, reason="x", actor="s")
    assert not_paid.value.extensions == {
        "orderId": unpaid_id,
        "orderStatus": "awaiting_payment",
        "paymentStatus": "unpaid",
    }
    with pytest.raises(ValueError):
        order_refund(order_id=order_id, amount=0, reason="x", actor="s")

    assert stripe_refunds(stripe_emulator, order_id) == []
    assert not Refund.objects.exists() and not OrderOperation.objects.exists()
    assert not Outbox.objects.filter(event_type="order.refunded").exists()
    payment = Payment.objects.get(order_id=order_id)
    assert (payment.refund_seq, payment.refund_reserved, payment.amount_refunded) == (0, 0, 0)
    assert order_view(client, order_id)["paymentStatus"] == "paid"
    invariants_hold()


def test_a_refund_stripe_refuses_frees_its_amount_and_says_why(stripe_emulator):
    """Someone refunded most of it in Stripe's dashboard and no webhook told us yet: Stripe refuses ours as
    too large; our refund fails, takes nothing, and the operation records why."""
    client, order_id = paid_order((make_product(price=1000), 1))
    intent_id = Order.objects.get(public_id=order_id).payment_intent_id
    stripe_emulator.client().v1.refunds.create(params={"payment_intent": intent_id, "amount": 900})
    with pytest.raises(RefundFailed) as refused:
        order_refund(order_id=order_id, amount=500, reason="too late", actor="s")
    assert refused.value.extensions["stripeCode"] == "amount_too_large"
    refund = Refund.objects.get()
    assert refund.status == "failed" and "amount_too_large" in refund.failure_reason
    assert Payment.objects.get(order_id=order_id).refund_reserved == 0
    assert OrderOperation.objects.get().status == "failed"
    # What Stripe says is refunded reached the order with the attempt, so what is left is now right.
    assert order_view(client, order_id)["refundedAmount"] == 900
    assert order_refund(order_id=order_id, reason="the rest", actor="s").refund.amount == 100
