"""Reads of checkouts and orders, scoped to who may see them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q

from inventory.selectors import reservations_for_holder
from orders.errors import CheckoutNotFound, OrderNotFound, ReservationExpired
from orders.models import CheckoutSaga, Order


@dataclass(frozen=True)
class Caller:
    """Who asks: a signed-in user and/or the holder of a cart token (its hash)."""

    cart_key: str | None
    token_hash: str | None
    user_id: int | None


def _owned(caller: Caller) -> Q:
    q = Q(pk__in=[])
    if caller.user_id is not None:
        q |= Q(user_id=caller.user_id)
    if caller.token_hash:
        q |= Q(cart_token_hash=caller.token_hash)
    if caller.cart_key:
        q |= Q(cart_key=caller.cart_key)
    return q


def checkout_get(*, checkout_id: str, caller: Caller) -> CheckoutSaga:
    saga = (
        CheckoutSaga.objects.filter(_owned(caller), public_id=checkout_id).select_related("order").first()
        if checkout_id
        else None
    )
    if saga is None:
        raise CheckoutNotFound(f"No checkout {checkout_id!r} is visible to you.")
    return saga


def checkout_active_for_cart(*, caller: Caller) -> CheckoutSaga:
    saga = None
    if caller.cart_key:
        saga = (
            CheckoutSaga.objects.filter(cart_key=caller.cart_key, state__in=CheckoutSaga.ACTIVE)
            .select_related("order")
            .first()
        )
    if saga is None and caller.cart_key:
        # The cart's last checkout lapsed: say so (docs/api.md, "Checkout": 409 reservation_expired), not "no checkout".
        last = CheckoutSaga.objects.filter(cart_key=caller.cart_key).order_by("-pk").only("public_id", "state").first()
        if last is not None and last.state == CheckoutSaga.State.EXPIRED:
            raise ReservationExpired(checkoutId=last.public_id)
    if saga is None:
        raise CheckoutNotFound("This cart has no active checkout.")
    return saga


def order_find(*, order_id: str) -> Order:
    """Any order by its id, for operations staff (admin, management commands): no caller to scope it to."""
    order = Order.objects.filter(public_id=order_id).first() if order_id else None
    if order is None:
        raise OrderNotFound(f"There is no order {order_id!r}.")
    return order


# What GET /api/orders/{id} says about the money (docs/api.md, "Orders").
PAYMENT_STATUSES = ("unpaid", "authorized", "paid", "partially_refunded", "refunded")


def order_payment_status(order: Order) -> str:
    """The order's ``paymentStatus``: from the PaymentIntent status the order records and what is refunded.

    ``authorized``: an uncaptured authorization (``requires_capture``); ``unpaid``: nothing captured (no
    PaymentIntent yet, declined, in 3-D Secure, processing, or canceled/voided)."""
    if order.payment_status == "requires_capture":
        return "authorized"
    if order.payment_status not in (Order.PaymentStatus.SUCCEEDED, Order.PaymentStatus.REFUNDED):
        return "unpaid"
    if order.payment_status == Order.PaymentStatus.REFUNDED or 0 < order.total <= order.amount_refunded:
        return "refunded"
    return "partially_refunded" if order.amount_refunded > 0 else "paid"


def order_get(*, order_id: str, caller: Caller) -> Order:
    order = Order.objects.filter(_owned(caller), public_id=order_id).prefetch_related("lines").first()
    if order is None:
        raise OrderNotFound(f"No order {order_id!r} is visible to you.")
    return order


def reservation_expires_at(*, saga: CheckoutSaga) -> datetime | None:
    """The hold's real expiry (the sweep may have extended it while the buyer was paying)."""
    held = [r.expires_at for r in reservations_for_holder(holder=saga.public_id) if r.status == "HELD"]
    return min(held) if held else saga.expires_at


def checkout_view(*, saga: CheckoutSaga, steps: bool = False, fresh: bool = False) -> dict[str, Any]:
    """The checkout as the API shows it (snake_case; serializers rename).

    ``fresh``: this request has just written the saga, its order and its hold (a start that created the
    checkout), so the objects in hand are current and nothing is read again (two SELECTs off every start).
    """
    if fresh:
        order = saga.order if saga.order_id else None
    else:
        # Read the order afresh: the saga's cached one predates the charge that just updated it.
        order = Order.objects.filter(pk=saga.order_id).first() if saga.order_id else None
    amount = order.total if order else sum(line["unit_price"] * line["quantity"] for line in saga.lines)
    view: dict[str, Any] = {
        "checkout_id": saga.public_id,
        "order_id": order.public_id if order else None,
        "status": saga.state,
        "amount": amount,
        "currency": order.currency if order else saga.currency,
        "lines": [
            {
                "product_id": line["product_id"],
                "sku": line["sku"],
                "name": line["name"],
                "quantity": line["quantity"],
                "unit_price": line["unit_price"],
                "line_total": line["unit_price"] * line["quantity"],
            }
            for line in saga.lines
        ],
        # A confirmed hold is committed (no HELD row left to read): the saga's expiry is the answer.
        "reservation_expires_at": saga.expires_at
        if fresh or saga.is_terminal or saga.state == CheckoutSaga.State.CONFIRMED
        else reservation_expires_at(saga=saga),
        "payment_client_secret": saga.client_secret or None,
        "next_action": saga.next_action,
        "payment_status": order.payment_status if order else "none",
        "last_error_code": saga.last_error_code or None,
    }
    if steps:
        view["steps"] = [{"name": s.step, "status": s.outcome, "at": s.at} for s in saga.log.all()]
    return view


def checkout_payment_intent_view(*, saga: CheckoutSaga) -> dict[str, Any]:
    """The checkout's one PaymentIntent as ``/payment-intent`` shows it (snake_case; serializers rename)."""
    order = saga.order
    return {
        "payment_intent_id": saga.payment_intent_id,
        "client_secret": saga.client_secret,
        "amount": order.total,
        "currency": order.currency,
    }
