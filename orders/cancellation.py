"""Cancelling a paid order: ``manage.py cancel_order`` and the admin's "Cancel after payment…" form.

A confirmed or fulfilled order ("fulfilled" is handed to fulfilment, not delivered) is cancelled in steps
that are each safe to run again, so the operation as a whole is:

1. **claim**: the order's one cancellation row (``OrderOperation``, kind ``cancel``, unique per order)
   with who, why and whether to restock. Two staff cancelling at once share it: the second one's INSERT
   loses on the unique index and it carries on with the first one's row.
2. **money back**: an uncaptured authorization is voided (``payment_intent_cancel``, key
   ``cf:<order>:cancel``); a captured payment gets what is left refunded by a numbered refund
   (orders/refunds.py, payments/refunds.py), after any earlier one without an answer is finished.
3. **stock back** (unless ``restock=False``): each line's quantity through ``inventory.services.stock_adjust``
   with the reference ``order:<id>:cancel``, audited like any stock adjustment and applied once per product
   whoever runs it.
4. **finish**: the order ``cancelled`` (only from confirmed/fulfilled, so once), payments told that a charge
   landing on it later is to be refunded (reconciliation), ``order.cancelled`` in the outbox, the row done.

A crash anywhere leaves the row ``started``; running the command again finishes it (check_invariants lists
cancellations left unfinished). The checkout saga is not touched: it ended when the order was confirmed
(a fulfilment still waiting in the outbox then finds the order cancelled and leaves it so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from cartflow.money import money_format
from inventory.services import stock_adjust
from orders.errors import OrderNotCancellable
from orders.models import Order, OrderOperation
from orders.outbound.events import outbound_event_record
from orders.refunds import actor_fields, order_refunds_record
from orders.saga.persistence import order_cancelled_after_payment, order_change, order_records_intent
from orders.selectors import order_find, order_payment_status
from orders.services import outbox_add
from payments.errors import PaymentTransientError, RefundExceedsRemaining, RefundInProgress
from payments.gateway import payment_intent_cancel
from payments.models import Refund
from payments.refunds import refund_execute, refund_reserve, refunds_unfinished
from payments.selectors import payment_get
from payments.services import payment_mark_order_cancelled

Op = OrderOperation


@dataclass(frozen=True)
class CancelOutcome:
    operation: OrderOperation
    order: Order
    already: bool = False  # it had been cancelled before this call: nothing was done again


def restock_reference(order_id: str) -> str:
    """What the restock's stock adjustments are named by (one per product, inventory/services.py)."""
    return f"order:{order_id}:cancel"


def order_cancel_paid(*, order_id: str, restock: bool = True, reason: str, actor: Any) -> CancelOutcome:
    """Cancel a paid order: money back, stock back (unless ``restock`` is False), order cancelled. Idempotent:
    a second call, even at the same time, finishes the first one's cancellation and does nothing twice.

    Raises OrderNotFound, OrderNotCancellable, RefundInProgress (a refund of the order has no answer from
    Stripe yet: run it again shortly), RefundFailed, PaymentTransientError, PaymentProviderBusy (each
    leaves the cancellation started, for the next call to finish).
    """
    order = order_find(order_id=order_id)
    operation = Op.objects.filter(order=order, kind=Op.Kind.CANCEL).first()
    if operation is None:
        _check_cancellable(order)
        operation = _claim(order, restock=restock, reason=reason, actor=actor)
    if operation.status == Op.Status.DONE:
        return CancelOutcome(operation=operation, order=order, already=True)
    done = [_money_back(order, operation)]
    if operation.restock:
        done.append(_stock_back(order, operation))
    return _finish(order, operation, "; ".join(done))


def cancel_summary(done: CancelOutcome) -> str:
    """One line for staff (the command's output, the admin's message)."""
    operation, order = done.operation, done.order
    if done.already:
        when = operation.finished_at.strftime("%Y-%m-%d %H:%M UTC") if operation.finished_at else "earlier"
        return (
            f"Order {order.public_id} was cancelled already ({when}, by {operation.actor_label}); nothing done again."
        )
    return f"Order {order.public_id} cancelled: {operation.outcome}."


def _check_cancellable(order: Order) -> None:
    payment = payment_get(order_id=order.public_id)
    paid = payment is not None and payment.status in ("succeeded", "requires_capture")
    if order.status not in (Order.Status.CONFIRMED, Order.Status.FULFILLED) or not paid:
        status = order_payment_status(order)
        raise OrderNotCancellable(
            f"Order {order.public_id} is {order.status} and its payment is {status}: only a confirmed or fulfilled "
            "order that was paid can be cancelled here (an unpaid checkout is cancelled by the buyer).",
            orderId=order.public_id,
            orderStatus=order.status,
            paymentStatus=status,
        )


def _claim(order: Order, *, restock: bool, reason: str, actor: Any) -> OrderOperation:
    try:
        with transaction.atomic():
            return Op.objects.create(
                order=order, kind=Op.Kind.CANCEL, restock=restock, reason=reason, **actor_fields(actor)
            )
    except IntegrityError:  # cancelled at the same moment by someone else: finish theirs
        return Op.objects.get(order=order, kind=Op.Kind.CANCEL)


def _money_back(order: Order, operation: OrderOperation) -> str:
    payment = payment_get(order_id=order.public_id)
    if payment is not None and payment.status == "requires_capture":
        intent = payment_intent_cancel(order_id=order.public_id, intent_id=payment.intent_id)
        if not intent.succeeded:
            order_change(order.pk, order_records_intent(intent))
            return f"authorization {intent.intent_id} voided ({intent.status})"
        payment = payment_get(order_id=order.public_id)  # it was captured meanwhile: refund it instead
    if payment is None or payment.status != "succeeded":
        return f"nothing to give back (payment {payment.status if payment else 'missing'})"
    refund = _refund_the_rest(order)
    if refund is not None:
        Op.objects.filter(pk=operation.pk).update(refund_seq=refund.seq, amount=refund.amount)
    order = order_refunds_record(order_id=order.public_id)
    if refund is None:
        return f"nothing left to refund (refunded {money_format(order.amount_refunded, order.currency)})"
    return f"refunded {money_format(refund.amount, order.currency)} (refund #{refund.seq}, {refund.status})"


def _refund_the_rest(order: Order) -> Refund | None:
    """Finish any refund of the order still without an answer, then refund what is left (None: nothing is)."""
    for _attempt in range(2):  # a refund reserved by a colleague between the two steps is finished, once
        for earlier in refunds_unfinished(order_id=order.public_id):
            try:
                refund_execute(refund_id=earlier.pk)
            except PaymentTransientError as exc:
                raise RefundInProgress(
                    f"Refund #{earlier.seq} of this order still has no answer from Stripe; the cancellation is "
                    "left started. Run it again shortly.",
                    orderId=order.public_id,
                    refundSeq=earlier.seq,
                ) from exc
        try:
            refund = refund_reserve(order_id=order.public_id)
        except RefundExceedsRemaining:
            return None
        except RefundInProgress:
            continue
        return refund_execute(refund_id=refund.pk)
    raise RefundInProgress(
        "Refunds of this order keep being started by someone else; the cancellation is left started. Run it "
        "again shortly.",
        orderId=order.public_id,
    )


def _stock_back(order: Order, operation: OrderOperation) -> str:
    reason = f"order {order.public_id} cancelled" + (f": {operation.reason}" if operation.reason else "")
    lines = list(order.lines.order_by("product_id"))  # products in id order, like every stock write
    for line in lines:
        stock_adjust(
            product_id=line.product_id,
            delta=line.quantity,
            reason=reason[:200],
            user=operation.actor,
            reference=restock_reference(order.public_id),
        )
    return "stock put back: " + ", ".join(f"{line.quantity} × {line.sku}" for line in lines)


def _finish(order: Order, operation: OrderOperation, outcome: str) -> CancelOutcome:
    with transaction.atomic():  # the order cancelled, the event that tells it and the row done, or none
        if order_change(order.pk, order_cancelled_after_payment()):
            payment_mark_order_cancelled(order_id=order.public_id)
            outbox_add(
                event_type="order.cancelled",
                payload={"orderId": order.public_id, "reason": operation.reason, "restocked": bool(operation.restock)},
            )
            outbound_event_record(
                type="order.cancelled",
                order=order,
                key="order.cancelled:after-payment",
                data={"reason": operation.reason, "restocked": bool(operation.restock)},
            )
        Op.objects.filter(pk=operation.pk, status=Op.Status.STARTED).update(
            status=Op.Status.DONE, outcome=outcome, finished_at=timezone.now()
        )
    operation.refresh_from_db()
    return CancelOutcome(operation=operation, order=Order.objects.get(pk=order.pk))
