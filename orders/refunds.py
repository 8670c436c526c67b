"""Refunds of a paid order by operations staff: ``manage.py refund_order`` and the admin's "Refund…" form.

:func:`order_refund` checks the order, then runs a numbered refund of its payment (payments/refunds.py: the
amount taken in the database first, then Stripe with the key ``cf:<order>:refund:<seq>``, then settled),
records on the order what Stripe has refunded and tells the shop's other systems (``order.refunded`` in
the outbox). Each write is short and none is open across the Stripe call. Who asked and why is an
``OrderOperation`` row.

The order's refunded amount follows its Payment row whoever learns of a refund first: this operation, a
webhook (``charge.refunded``, ``refund.updated``) or the reconciliation, through the intent listener that
orders registers (orders/apps.py) — :func:`order_refunds_record` is the one writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from cartflow.money import money_format
from orders.errors import OrderNotRefundable
from orders.models import Order, OrderOperation
from orders.outbound.events import outbound_event_record
from orders.saga.persistence import order_change, order_refund_total
from orders.selectors import order_find, order_payment_status
from orders.services import outbox_add
from payments.errors import PaymentTransientError, RefundInProgress
from payments.interface import IntentResult
from payments.models import Refund
from payments.refunds import refund_execute, refund_reserve, refunds_unfinished
from payments.selectors import payment_get, refunds_of_order

Op = OrderOperation
RECORD_ATTEMPTS = 5  # lost value checks in a row on the order's refunded amount before leaving it to the next news


@dataclass(frozen=True)
class RefundOutcome:
    operation: OrderOperation | None  # None only for an earlier refund no operation names (a bug's leftover)
    refund: Refund
    order: Order
    resumed: bool = False  # an earlier refund of the order had not finished: it was finished, nothing new began


def actor_fields(actor: Any) -> dict[str, Any]:
    """``actor``: a staff user, or a label for who else asked (``manage.py refund_order (alice)``)."""
    if isinstance(actor, str):
        return {"actor": None, "actor_label": actor[:150]}
    return {"actor": actor if getattr(actor, "pk", None) else None, "actor_label": actor.get_username()[:150]}


def order_refund(*, order_id: str, amount: int | None = None, reason: str = "", actor: Any) -> RefundOutcome:
    """Refund ``amount`` minor units of the order (all that is left without it), never more than was paid.

    Raises OrderNotFound, OrderNotRefundable, RefundExceedsRemaining (nothing done), RefundInProgress
    (another refund of the order has no answer from Stripe yet), RefundFailed (Stripe refused it: nothing
    refunded), PaymentProviderBusy (nothing sent), PaymentTransientError (Stripe's answer was lost: the
    next call for this order asks again with the same key and finishes it instead of starting another).
    """
    if amount is not None and amount < 1:
        raise ValueError("a refund amount is a positive number of minor units")
    order = order_find(order_id=order_id)
    _check_refundable(order)
    unfinished = refunds_unfinished(order_id=order.public_id)
    if unfinished:
        return _finish_earlier(order, unfinished[0])
    with transaction.atomic():  # the numbered refund and who asked for it, or neither
        refund = refund_reserve(order_id=order.public_id, amount=amount)
        operation = Op.objects.create(
            order=order,
            kind=Op.Kind.REFUND,
            amount=refund.amount,
            refund_seq=refund.seq,
            reason=reason,
            **actor_fields(actor),
        )
    try:
        refund = refund_execute(refund_id=refund.pk)
    except PaymentTransientError:
        _note(operation, "Stripe's answer was lost; asking again with the same key finishes it.")
        raise
    finally:
        order = order_refunds_record(order_id=order.public_id)
    operation.refresh_from_db()
    return RefundOutcome(operation=operation, refund=refund, order=order)


def refund_summary(done: RefundOutcome) -> str:
    """One line for staff (the command's output, the admin's message)."""
    order, refund = done.order, done.refund
    so_far = (
        f"refunded so far {money_format(order.amount_refunded, order.currency)} of "
        f"{money_format(order.total, order.currency)} ({order_payment_status(order)})"
    )
    if done.resumed:
        return (
            f"Refund #{refund.seq} of order {order.public_id} ({money_format(refund.amount, order.currency)}), left "
            f"unfinished earlier, is now {refund.status}; nothing new was refunded; {so_far}."
        )
    return (
        f"Refunded {money_format(refund.amount, order.currency)} of order {order.public_id} (refund #{refund.seq}, "
        f"{refund.status}); {so_far}."
    )


def _check_refundable(order: Order) -> None:
    payment = payment_get(order_id=order.public_id)
    captured = payment is not None and payment.status == "succeeded"
    if order.status not in (Order.Status.CONFIRMED, Order.Status.FULFILLED) or not captured:
        status = order_payment_status(order)
        raise OrderNotRefundable(
            f"Order {order.public_id} is {order.status} and its payment is {status}: only a confirmed or fulfilled "
            "order with a captured payment can be refunded.",
            orderId=order.public_id,
            orderStatus=order.status,
            paymentStatus=status,
        )


def _finish_earlier(order: Order, refund: Refund) -> RefundOutcome:
    """Finish a refund of the order that Stripe has not answered (a crash, a lost answer, or a colleague's
    refund still running) with its own key, instead of starting another: a retried command never refunds
    twice."""
    operation = Op.objects.filter(order=order, refund_seq=refund.seq).first()
    try:
        refund = refund_execute(refund_id=refund.pk)
    except PaymentTransientError as exc:
        raise RefundInProgress(
            f"Refund #{refund.seq} of this order ({money_format(refund.amount, order.currency)}) still has no answer "
            "from Stripe; nothing else was started. Try again shortly.",
            orderId=order.public_id,
            refundSeq=refund.seq,
        ) from exc
    finally:
        order = order_refunds_record(order_id=order.public_id)
    if operation is not None:
        operation.refresh_from_db()
    return RefundOutcome(operation=operation, refund=refund, order=order, resumed=True)


def order_refunds_record(*, order_id: str) -> Order:
    """Bring the order's refunded amount (and ``refunded`` status) to its Payment row's, write
    ``order.refunded`` when it grew, and close the refund operations whose refund has settled."""
    for _attempt in range(RECORD_ATTEMPTS):
        order = Order.objects.get(public_id=order_id)
        payment = payment_get(order_id=order_id)
        refunded = payment.amount_refunded if payment is not None else 0
        if refunded == order.amount_refunded:
            break
        with transaction.atomic():  # the new amount and the event that tells it, or neither
            if order_change(order.pk, order_refund_total(refunded=refunded, was=order.amount_refunded)):
                if refunded > order.amount_refunded:
                    outbox_add(
                        event_type="order.refunded",
                        payload={"orderId": order_id, "refundedAmount": refunded, "currency": order.currency},
                    )
                    # The shop's systems hear it too (docs/webhooks.md); keyed by the new total, so a
                    # retried record announces each amount once.
                    outbound_event_record(
                        type="order.refunded",
                        order=order,
                        key=f"order.refunded:total:{refunded}",
                        data={"refund": {"amount": refunded - order.amount_refunded}},
                    )
                break
    _close_operations(order)
    return Order.objects.get(pk=order.pk)


def _close_operations(order: Order) -> None:
    """Refund operations still ``started`` end as their refund did (done once Stripe took it, failed if not)."""
    started = list(Op.objects.filter(order=order, kind=Op.Kind.REFUND, status=Op.Status.STARTED))
    if not started:
        return
    refunds = {r.seq: r for r in refunds_of_order(order_id=order.public_id)}
    for operation in started:
        refund = refunds.get(operation.refund_seq)
        if refund is None or refund.status == Refund.Status.REQUESTED:
            continue
        failed = refund.status in (Refund.Status.FAILED, Refund.Status.CANCELED)
        outcome = (
            f"refund #{refund.seq} {refund.status}: {refund.failure_reason or 'nothing refunded'}"
            if failed
            else f"refunded {money_format(refund.amount, order.currency)} (refund #{refund.seq}, "
            f"{refund.stripe_refund_id}, {refund.status})"
        )
        Op.objects.filter(pk=operation.pk, status=Op.Status.STARTED).update(
            status=Op.Status.FAILED if failed else Op.Status.DONE, outcome=outcome, finished_at=timezone.now()
        )


def _note(operation: OrderOperation, outcome: str) -> None:
    Op.objects.filter(pk=operation.pk, status=Op.Status.STARTED).update(outcome=outcome)


# --- payments' intent listener (registered in orders/apps.py) ----------------------------------------------


def order_on_intent(intent: IntentResult, source: str) -> None:
    """Webhooks and reconciliation re-fetched the PaymentIntent: the order's refunded amount follows."""
    if not intent.order_id:
        return
    recorded = Order.objects.filter(public_id=intent.order_id).values_list("amount_refunded", flat=True).first()
    if recorded is not None and recorded != intent.amount_refunded:
        order_refunds_record(order_id=intent.order_id)


def order_settled_for_intent(intent_id: str, status: str) -> bool:
    """A ``payment_intent.*`` event never brings a refund (refunds come as ``charge.refunded`` and
    ``refund.updated``, which are always re-fetched), so this listener has nothing to learn from one."""
    return True
