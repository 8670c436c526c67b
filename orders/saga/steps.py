"""The saga's steps, each beside its undo; the steps that call Stripe are in orders/saga/payment_steps.py.

Every step persists "about to" before its side effect and "done" after it (orders/saga/persistence.py),
with a crash point at each (orders/saga/crashpoints.py), and is safe to run again from what it persisted;
every undo is safe to run twice. A step never decides to compensate: when it finds the checkout cannot go
on it records why and raises :class:`CompensationRequired`, and the driver (orders/saga/driver.py) runs the
undos in reverse order.

    step                   undo                    module
    reserve                release                 steps.py
    create_order           cancel_order            steps.py
    create_payment_intent  cancel_payment_intent   payment_steps.py
    charge                 refund, or for an       payment_steps.py
                           authorization cancel_payment_intent (a void)
    confirm                —  (a confirmed order is never compensated)
    capture                —  (the outbox consumer, first, when the charge only authorized)  payment_steps.py
    fulfil                 —  (the outbox consumer)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from celery import signature
from django.db import transaction

from cart.services import cart_clear
from inventory.errors import InsufficientStock, InventoryContention, ReservationStateError
from inventory.flashsale import flash_tokens_consume, flash_tokens_return
from inventory.services import (
    ReserveLine,
    reservation_commit,
    reservation_release,
    reservation_reserve,
)
from orders.metrics import checkout_counted, compensation_counted
from orders.models import CheckoutSaga, Order
from orders.outbound.events import order_event
from orders.saga.crashpoints import crash_point
from orders.saga.persistence import (
    ABOUT_TO,
    DONE,
    FAILED,
    INDETERMINATE,
    order_cancelled,
    order_fulfilled,
    save_about_to,
    save_confirmed,
    save_done,
    save_order_created,
    save_outcome,
)
from payments.services import payment_mark_order_cancelled

log = structlog.get_logger("cartflow.checkout")
S = CheckoutSaga.State


class CompensationRequired(Exception):  # noqa: N818 - a request to the driver, not a failure of the code
    """A step found that the checkout cannot go on; it has recorded why. The driver undoes the saga to ``to``."""

    def __init__(self, *, to: str, code: str, message: str) -> None:
        super().__init__(message)
        self.to, self.code, self.message = to, code, message


def about_to(saga: CheckoutSaga, step: str, **fields: Any) -> None:
    """Persist "about to <step>"; then the step's ``:before`` crash point."""
    save_about_to(saga, step, **fields)
    crash_point(f"{step}:before")


def announce(saga: CheckoutSaga, step: str) -> None:
    """Persist "about to <step>" unless the previous step's "done" already persisted it (merged writes)."""
    if saga.step == step and saga.step_status == ABOUT_TO:
        crash_point(f"{step}:before")
    else:
        about_to(saga, step)


def done(saga: CheckoutSaga, step: str, **kwargs: Any) -> None:
    """The step's ``:after`` crash point; then persist "<step> done" (with its writes, see ``save_done``)."""
    crash_point(f"{step}:after")
    save_done(saga, step, **kwargs)


def error_code(exc: Exception) -> str:
    return str(getattr(exc, "code", None) or exc.__class__.__name__)


def failed(saga: CheckoutSaga, step: str, exc: Exception) -> None:
    """Record that ``step`` failed with ``exc``."""
    code = error_code(exc)
    save_outcome(
        saga, step, FAILED, details={"error": code}, last_error_code=code[:64], last_error_message=str(exc)[:2000]
    )


def pending(saga: CheckoutSaga, step: str) -> bool:
    """``step`` was about to happen (or its outcome is unknown): a Stripe call may have reached Stripe."""
    return saga.step == step and saga.step_status in (ABOUT_TO, INDETERMINATE)


# --- reserve / release ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reserved:
    """What the reserve step did, written together with the order (see :func:`reserve`)."""

    units: int
    expires_at: datetime


def reserve_lines(saga: CheckoutSaga) -> list[ReserveLine]:
    return [ReserveLine(product_id=line["product_id"], quantity=line["quantity"]) for line in saga.lines]


def reserve(saga: CheckoutSaga, *, new_holder: bool = False) -> Reserved:
    """Hold the stock. "reserve done" is not written here but in the order's statement, one write fewer per
    start: a crash in between leaves "about to reserve", and reserving again for the same holder holds
    nothing twice (``reservation_reserve`` is idempotent per holder). Raises InsufficientStock or
    InventoryContention after recording the failure."""
    announce(saga, "reserve")
    try:
        held = reservation_reserve(lines=reserve_lines(saga), holder=saga.public_id, new_holder=new_holder)
    except (InsufficientStock, InventoryContention) as exc:
        failed(saga, "reserve", exc)
        raise
    crash_point("reserve:after")
    return Reserved(units=sum(r.quantity for r in held), expires_at=min(r.expires_at for r in held))


def reserve_again(saga: CheckoutSaga) -> bool:
    """Take the stock again for a hold that lapsed (the buyer paid as it expired). False if it is gone."""
    try:
        reservation_reserve(lines=reserve_lines(saga), holder=saga.public_id)
        return True
    except (InsufficientStock, InventoryContention, ReservationStateError):
        return False


def release(saga: CheckoutSaga, *, to: str) -> None:
    about_to(saga, "release")
    released = reservation_release(holder=saga.public_id, status="EXPIRED" if to == S.EXPIRED else "RELEASED")
    returned = flash_tokens_return(holder=saga.public_id)  # safe twice; outside any transaction
    done(saga, "release", details={"units": released, "flashTokens": returned})
    compensation_counted("release")


# --- create_order / cancel_order --------------------------------------------------------------------------


def create_order(saga: CheckoutSaga, *, reserved: Reserved | None = None, release_lease: bool = False) -> None:
    """The order and its lines, priced as the saga holds them, and "create_order done" in one statement: the
    saga is then ``awaiting_payment``. ``reserved``: the reserve step just ran in this process, and its
    "done" rides in the same statement (the step trail reads as if written apart). The PaymentIntent is
    created when the buyer pays."""
    if reserved is None:
        announce(saga, "create_order")
    else:
        crash_point("create_order:before")
    crash_point("create_order:after")  # the order and "done" commit together: a crash here left no order
    subtotal = sum(line["unit_price"] * line["quantity"] for line in saga.lines)
    order = Order(
        user_id=saga.user_id,
        email=saga.email,
        cart_key=saga.cart_key,
        cart_token_hash=saga.cart_token_hash,
        currency=saga.currency,
        subtotal=subtotal,
        total=subtotal,
    )
    log_rows = [("create_order", DONE, None)]
    more: dict[str, Any] = {}
    if reserved is not None:
        log_rows[:0] = [("reserve", DONE, {"units": reserved.units}), ("create_order", ABOUT_TO, None)]
        more["expires_at"] = reserved.expires_at
    save_order_created(
        saga,
        order,
        log=log_rows,
        release_lease=release_lease,
        step="create_order",
        step_status=DONE,
        state=S.AWAITING_PAYMENT,
        **more,
    )


def cancel_order(saga: CheckoutSaga) -> None:
    about_to(saga, "cancel_order")
    payment_mark_order_cancelled(order_id=saga.order.public_id)
    done(saga, "cancel_order", order=order_cancelled())
    compensation_counted("cancel_order")


# --- confirm ----------------------------------------------------------------------------------------------


def confirm(saga: CheckoutSaga, *, release_lease: bool = False) -> None:
    """Commit the hold; the order confirmed and its outbox event in "confirm done". If the hold lapsed
    while the buyer paid, take the stock again if it is still there; if not, raise CompensationRequired
    (the order is refunded)."""
    announce(saga, "confirm")
    try:
        reservation_commit(holder=saga.public_id)  # already committed → no-op
    except ReservationStateError:
        try:
            reservation_reserve(lines=reserve_lines(saga), holder=saga.public_id)
            reservation_commit(holder=saga.public_id)
        except (InsufficientStock, ReservationStateError) as exc:
            failed(saga, "confirm", exc)
            raise CompensationRequired(to=S.FAILED, code=error_code(exc), message=str(exc)) from exc
    crash_point("confirm:after")
    outbox_id = save_confirmed(saga, release_lease=release_lease)
    checkout_counted("confirmed")
    transaction.on_commit(lambda: _enqueue_outbox(outbox_id))
    flash_tokens_consume(holder=saga.public_id)  # sold: the sweeper consumes them if we crash before this
    log.info("checkout_confirmed", checkout_id=saga.public_id, order_id=saga.order.public_id)


# --- fulfil (the outbox consumer) -------------------------------------------------------------------------


def fulfil(saga: CheckoutSaga) -> None:
    """The order fulfilled (and ``order.fulfilled`` written for the shop's systems), the cart cleared,
    ``order.confirmed`` logged. Only what was checked out is cleared: a cart the buyer changed since the
    start is left alone."""
    about_to(saga, "fulfil")
    cleared = cart_clear(key=saga.cart_key, if_version=saga.cart_version)
    order = saga.order
    log.info(
        "order.confirmed",
        order_id=order.public_id,
        checkout_id=saga.public_id,
        amount=order.total,
        currency=order.currency,
        email=order.email,
        cart_cleared=cleared,
    )
    done(
        saga,
        "fulfil",
        state=S.FULFILLED,
        order=order_fulfilled(),
        event=order_event("order.fulfilled"),
        details={"cartCleared": cleared},
    )


def _enqueue_outbox(outbox_id: int) -> None:
    try:
        # By name: orders/tasks.py imports the saga, so the saga does not import it.
        signature("orders.tasks.outbox_process_task", args=(outbox_id,)).delay()
    except Exception:  # noqa: BLE001 - the broker is down: the beat sweep re-enqueues unprocessed rows
        log.warning("outbox_enqueue_failed", outbox_id=outbox_id)
