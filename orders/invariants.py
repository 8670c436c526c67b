"""Checkout invariants for `manage.py check_invariants` (docs/architecture.md, "Invariants")."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from cartflow.invariants import invariant
from inventory.models import Reservation, StockAdjustment
from orders.cancellation import restock_reference
from orders.models import CheckoutSaga, Order, OrderLine, OrderOperation
from payments.models import Payment

# A refund or cancellation still "started" after this long is not running any more: someone must finish it.
UNFINISHED_AFTER = timedelta(minutes=10)


@invariant("orders: a terminal checkout holds no stock")
def terminal_saga_holds_nothing() -> list[str]:
    terminal = CheckoutSaga.objects.filter(state__in=CheckoutSaga.TERMINAL).values_list("public_id", flat=True)
    held = Reservation.objects.filter(status="HELD", holder__in=terminal).values_list("holder", "product_id")
    return [f"checkout {holder} is terminal but holds product {pid}" for holder, pid in held]


@invariant("orders: a paid order is confirmed, fulfilled or refunded")
def paid_order_confirmed_or_refunded() -> list[str]:
    # Settled only: a saga still moving (active) may be between "paid" and "confirmed".
    rows = (
        Order.objects.filter(payment_status="succeeded")
        .exclude(status__in=["confirmed", "fulfilled"])
        .exclude(saga__state__in=CheckoutSaga.ACTIVE)
        .values_list("public_id", "status")
    )
    return [f"order {oid} was charged but is {status} and not refunded" for oid, status in rows]


@invariant("orders: an authorized order is confirmed or fulfilled")
def authorized_order_goes_on_or_is_voided() -> list[str]:
    # An authorization (manual capture) on a checkout that ended must have been voided. Settled only, as above.
    rows = (
        Order.objects.filter(payment_status="requires_capture")
        .exclude(status__in=["confirmed", "fulfilled"])
        .exclude(saga__state__in=CheckoutSaga.ACTIVE)
        .values_list("public_id", "status")
    )
    return [f"order {oid} holds an authorization but is {status} and it was not voided" for oid, status in rows]


@invariant("orders: a fulfilled order's payment was captured")
def fulfilled_order_captured() -> list[str]:
    # Fulfilment captures before it hands an order on; an order fulfilled uncaptured would be goods unpaid for.
    rows = Order.objects.filter(status="fulfilled", payment_status__in=["requires_capture", "canceled"])
    return [
        f"order {oid} was fulfilled but its payment is {status}"
        for oid, status in rows.values_list("public_id", "payment_status")
    ]


@invariant("orders: a confirmed order whose authorization is gone waits for staff")
def lost_authorization_flagged() -> list[str]:
    rows = Order.objects.filter(status="confirmed", payment_status="canceled", flagged_for_review=False)
    return [
        f"order {oid} is confirmed with its authorization canceled, and it is not flagged for review"
        for oid in rows.values_list("public_id", flat=True)
    ]


@invariant("orders: no authorization outlives the capture window")
def authorizations_settled_in_time() -> list[str]:
    # The beat task runs hourly: two more hours past CARTFLOW_CAPTURE_WITHIN_HOURS and it has missed its turn.
    hours = settings.CARTFLOW_CAPTURE_WITHIN_HOURS + 2
    rows = Payment.objects.filter(status="requires_capture", created__lt=timezone.now() - timedelta(hours=hours))
    return [
        f"order {oid}'s authorization {pi} was neither captured nor voided within {hours:g} h"
        for oid, pi in rows.values_list("order_id", "intent_id")
    ]


@invariant("orders: at most one succeeded PaymentIntent per order")
def one_succeeded_intent_per_order() -> list[str]:
    dupes = (
        Payment.objects.filter(status="succeeded")
        .values("order_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("order_id", "n")
    )
    out = [f"order {oid} has {n} succeeded PaymentIntents" for oid, n in dupes]
    paid_elsewhere = (
        Order.objects.filter(payment_status="succeeded")
        .exclude(payment_intent_id="")
        .values_list("public_id", "payment_intent_id")
    )
    for oid, pi in paid_elsewhere:
        other = Payment.objects.filter(order_id=oid).exclude(Q(intent_id=pi) | Q(intent_id__isnull=True)).first()
        if other is not None and other.status == "succeeded":
            out.append(f"order {oid} has a second succeeded PaymentIntent {other.intent_id}")
    return out


@invariant("orders: committed stock equals the lines of confirmed orders")
def committed_equals_confirmed_lines() -> list[str]:
    committed: dict[tuple[str, int], int] = defaultdict(int)
    for holder, pid, qty in Reservation.objects.filter(status="COMMITTED").values_list(
        "holder", "product_id", "quantity"
    ):
        committed[(holder, pid)] += qty
    sold: dict[tuple[str, int], int] = defaultdict(int)
    # An order cancelled after payment was sold first: its stock stays committed, and comes back (if it
    # does) through a stock adjustment, checked below.
    cancelled_after_payment = Q(
        order_id__in=OrderOperation.objects.filter(kind=OrderOperation.Kind.CANCEL).values("order_id")
    )
    lines = (
        OrderLine.objects.filter(Q(order__status__in=["confirmed", "fulfilled"]) | cancelled_after_payment)
        .values("order__saga__public_id", "product_id")
        .annotate(q=Sum("quantity"))
    )
    for row in lines:
        sold[(row["order__saga__public_id"], row["product_id"])] += row["q"]
    out = []
    for key in sorted(set(committed) | set(sold), key=str):
        if committed.get(key, 0) != sold.get(key, 0):
            out.append(
                f"checkout {key[0]} product {key[1]}: committed {committed.get(key, 0)}, sold {sold.get(key, 0)}"
            )
    return out


@invariant("orders: refunded <= paid")
def order_refunded_within_total() -> list[str]:
    over = Order.objects.filter(amount_refunded__gt=F("total")).values_list("public_id", "total", "amount_refunded")
    return [f"order {oid}: total {total}, refunded {refunded}" for oid, total, refunded in over]


@invariant("orders: a cancelled-after-payment order keeps no money and has its stock back unless --no-restock")
def cancelled_after_payment_settled() -> list[str]:
    out = []
    done = OrderOperation.objects.filter(kind=OrderOperation.Kind.CANCEL, status=OrderOperation.Status.DONE)
    for operation in done.select_related("order").prefetch_related("order__lines"):
        order = operation.order
        if order.status != Order.Status.CANCELLED:
            out.append(f"order {order.public_id}: its cancellation is done but the order is {order.status}")
        payment = Payment.objects.filter(order_id=order.public_id).first()
        if payment is not None and payment.status == "succeeded" and payment.amount_refunded < payment.amount:
            out.append(
                f"order {order.public_id}: cancelled but {payment.amount - payment.amount_refunded} "
                f"{payment.currency} of its payment is not refunded"
            )
        returned = dict(
            StockAdjustment.objects.filter(reference=restock_reference(order.public_id)).values_list(
                "product_id", "delta"
            )
        )
        expected = {line.product_id: line.quantity for line in order.lines.all()} if operation.restock else {}
        if returned != expected:
            out.append(
                f"order {order.public_id}: cancelled {'with' if operation.restock else 'without'} restock, but the "
                f"stock put back is {returned or 'nothing'} (expected {expected or 'nothing'})"
            )
    return out


@invariant("orders: every refund and cancellation staff started has finished")
def operations_finished() -> list[str]:
    stale = OrderOperation.objects.filter(
        status=OrderOperation.Status.STARTED, created_at__lt=timezone.now() - UNFINISHED_AFTER
    ).select_related("order")
    command = {OrderOperation.Kind.REFUND: "refund_order", OrderOperation.Kind.CANCEL: "cancel_order"}
    return [
        f"order {op.order.public_id}: {op.get_kind_display()} by {op.actor_label} started "
        f"{op.created_at:%Y-%m-%d %H:%M} has not finished (run manage.py {command[op.kind]} {op.order.public_id})"
        for op in stale
    ]
