"""The checkout saga's entry points, each the list of steps it runs (orders/saga/steps.py, payment_steps.py).

    checkout_start            reserve → create_order                       (no Stripe call)
    checkout_payment_intent   create_payment_intent                        (a Stripe.js storefront)
    checkout_confirm          charge → confirm
    saga_fulfil               capture (if authorized) → fulfil             (the outbox consumer)
    checkout_cancel           compensate to cancelled
    saga_resume               whatever was left: settle, confirm, compensate (recovery, admin)
    saga_compensate           compensate                                   (admin)
    saga_recover              saga_resume for every stuck saga             (beat, ``recover_sagas``;
                                                                           which are stuck: orders/saga/stuck.py)

Each runs while holding the saga's lease (orders/saga/lease.py). :func:`compensate` undoes a saga in
reverse order: refund or cancel_payment_intent (which voids an authorization) → cancel_order → release.
Authorizations that fulfilment did not capture in time are settled by orders/saga/authorizations.py (beat).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from django.conf import settings
from django.utils import timezone

from cart.services import CartSnapshot, cart_snapshot
from inventory.errors import InsufficientStock, InventoryContention, ProductNotFound
from inventory.flashsale import flash_tokens_return, flash_tokens_take
from inventory.selectors import product_infos_get, reservations_for_holder
from orders.errors import (
    CartEmpty,
    CheckoutInProgress,
    CheckoutNotCancellable,
    CheckoutNotConfirmable,
    ReservationExpired,
)
from orders.metrics import checkout_counted
from orders.models import CheckoutSaga, Outbox, new_checkout_id
from orders.outbound.events import order_event
from orders.saga import hold_caps, lease, payment_steps, steps
from orders.saga.hold_caps import HoldsRefused
from orders.saga.insertion import Inserted, insert_saga
from orders.saga.intent_outcome import IntentOutcome, intent_outcome
from orders.saga.lease import driving
from orders.saga.persistence import ABOUT_TO, DONE, lease_length, save
from orders.saga.steps import CompensationRequired, pending
from orders.saga.stuck import sagas_stuck

log = structlog.get_logger("cartflow.checkout")
S = CheckoutSaga.State


# --- start: reserve → create_order (no Stripe call) ---------------------------------------------------------


def checkout_start(
    *,
    cart_key: str,
    token_hash: str | None = None,
    user_id: int | None = None,
    email: str | None = None,
    flash_ticket: str | None = None,
    client_key: str | None = None,
) -> tuple[CheckoutSaga, bool]:
    """Start the cart's checkout, or return its active one. Returns ``(saga, created)``.

    The partial unique index on ``cart_key`` (active states) makes a concurrent second start lose the
    insert; it then waits briefly for the winner to reach ``awaiting_payment`` and returns it.

    ``client_key``: who the hold caps count the checkout against (orders/saga/hold_caps.py; None: no caps); a
    start over a cap raises QuantityLimitExceeded or TooManyActiveCheckouts, unless the cart's active
    checkout answers.

    Flash sale: the checkout id is chosen first and one token per unit of flash-sale lines is taken in
    Redis before any database work (``sold_out`` / ``flash_sale_busy`` / a line over the per-buyer limit
    answer without a query). A start that does not create the saga gives its tokens back.
    """
    snapshot = cart_snapshot(key=cart_key)
    checkout_id = new_checkout_id()
    if snapshot.lines:
        lines = [(line.product_id, line.quantity) for line in snapshot.lines]
        if client_key:
            hold_caps.check_cart_lines(lines)
        flash_tokens_take(
            holder=checkout_id,
            lines=lines,
            ticket=flash_ticket,
            cart_key=cart_key,
            max_units=hold_caps.unit_limit(flash_sale=True) if client_key else 0,
        )
    buyer = _Buyer(token_hash=token_hash, user_id=user_id, email=email, client_key=client_key)
    try:
        return _start(snapshot=snapshot, checkout_id=checkout_id, buyer=buyer)
    except BaseException:
        _flash_give_back_unless_saved(checkout_id)
        raise


@dataclass(frozen=True)
class _Buyer:
    token_hash: str | None
    user_id: int | None
    email: str | None
    client_key: str | None


def _start(*, snapshot: CartSnapshot, checkout_id: str, buyer: _Buyer) -> tuple[CheckoutSaga, bool]:
    cart_key = snapshot.key
    deadline = time.monotonic() + getattr(settings, "CARTFLOW_CHECKOUT_START_WAIT_SECONDS", 5.0)
    owner = lease.new_owner()
    priced: _Priced | None = None
    while True:
        # Insert first (the common case), look for the active checkout only when the index says there is one.
        active, refused = None, None
        if snapshot.lines:
            try:
                priced = priced or _priced_lines(snapshot.lines, client_key=buyer.client_key)
            except ProductNotFound:
                active = _active_for_cart(cart_key)
                if active is None:
                    raise
        if active is None and priced is not None:
            saga = _new_saga(checkout_id=checkout_id, snapshot=snapshot, priced=priced, buyer=buyer, owner=owner)
            log_rows = [("start", DONE, {"cartVersion": snapshot.version}), ("reserve", ABOUT_TO, None)]
            inserted = insert_saga(saga, log=log_rows, guard=priced.guard)
            if inserted is Inserted.SAGA:
                checkout_counted("started")
                try:
                    _run_start(saga, release_lease=True, new_saga=True)
                except Exception:
                    lease.release(saga)
                    raise
                lease.release(saga)  # no-op unless a step was skipped
                return saga, True
            if inserted is Inserted.SLOT_TAKEN:
                continue  # a parallel start of this client won the slot: count its holds again
            refused = inserted if isinstance(inserted, HoldsRefused) else None
        if active is None:
            active = _active_for_cart(cart_key)  # the cart's active checkout answers, over a cap or not
            if active is None:
                if refused is not None:
                    raise hold_caps.refusal(refused)
                if not snapshot.lines:
                    raise CartEmpty("There is nothing in the cart to check out.")
                continue  # the checkout that held the index ended meanwhile: insert again
        if active.state != S.RESERVED and not active.compensate_to:
            flash_tokens_return(holder=checkout_id)  # the cart's checkout is another one: not ours to hold
            return active, False
        if time.monotonic() >= deadline:
            raise CheckoutInProgress(
                "This cart's checkout is being started.", retry_after=1, checkoutId=active.public_id
            )
        time.sleep(0.05)


def _run_start(saga: CheckoutSaga, *, release_lease: bool = False, new_saga: bool = False) -> None:
    """Drive the start steps from wherever the saga is (also used by recovery).

    ``release_lease``: the last write gives the lease up (the caller does nothing after the start).
    ``new_saga``: the caller has just inserted the saga, so its checkout id holds nothing yet."""
    reserved = None
    if saga.order_id is None and saga.step == "reserve" and saga.step_status != DONE:
        try:
            reserved = steps.reserve(saga, new_holder=new_saga)
        except (InsufficientStock, InventoryContention) as exc:
            compensate(saga, to=S.FAILED, code=steps.error_code(exc), message=str(exc))
            raise
    if saga.order_id is None:
        steps.create_order(saga, reserved=reserved, release_lease=release_lease)


@dataclass(frozen=True)
class _Priced:
    lines: list[dict[str, Any]]
    currency: str
    guard: hold_caps.HoldGuard | None  # what the saga's INSERT checks against the client's other holds


def _priced_lines(lines: tuple, *, client_key: str | None) -> _Priced:
    """The cart's lines priced from the catalog now (never from the client), and their hold caps."""
    infos = product_infos_get(product_ids=[line.product_id for line in lines])
    priced, currencies, flash_ids = [], set(), set()
    for line in lines:
        info = infos.get(line.product_id)
        if info is None:
            raise ProductNotFound(f"Product {line.product_id} is no longer sold.", productId=line.product_id)
        currencies.add(info.currency)
        if info.flash_sale:
            flash_ids.add(info.id)
        priced.append(
            {
                "product_id": info.id,
                "sku": info.sku,
                "name": info.name,
                "unit_price": info.price,
                "quantity": line.quantity,
            }
        )
    if len(currencies) != 1:
        raise ProductNotFound("The cart mixes currencies.", productId=lines[0].product_id)
    pairs = [(line["product_id"], line["quantity"]) for line in priced]
    guard = hold_caps.hold_guard(client_key=client_key, lines=pairs, flash_ids=flash_ids)
    return _Priced(lines=priced, currency=currencies.pop(), guard=guard)


def _new_saga(*, checkout_id: str, snapshot: CartSnapshot, priced: _Priced, buyer: _Buyer, owner: str) -> CheckoutSaga:
    """The saga as it is born: holding its lease and "about to reserve"."""
    return CheckoutSaga(
        public_id=checkout_id,
        cart_key=snapshot.key,
        cart_version=snapshot.version,
        cart_token_hash=buyer.token_hash or "",
        user_id=buyer.user_id,
        email=buyer.email or "",
        client_key=buyer.client_key or "",
        lines=priced.lines,
        currency=priced.currency,
        step="reserve",
        step_status=ABOUT_TO,
        lease_owner=owner,
        lease_expires_at=timezone.now() + lease_length(),
    )


def _active_for_cart(cart_key: str) -> CheckoutSaga | None:
    return CheckoutSaga.objects.filter(cart_key=cart_key, state__in=CheckoutSaga.ACTIVE).first()


def _flash_give_back_unless_saved(checkout_id: str) -> None:
    """Tokens of a start that created no saga go back now; a saved saga returns them by compensating.

    If even this cannot be decided (the database or Redis is down), the flash sweeper returns them once
    they have stood a minute without a reservation."""
    try:
        if not CheckoutSaga.objects.filter(public_id=checkout_id).exists():
            flash_tokens_return(holder=checkout_id)
    except Exception:  # noqa: BLE001 - keep the original error
        log.warning("flash_tokens_left_to_sweeper", checkout_id=checkout_id)


# --- pay: create_payment_intent (Stripe.js), or charge → confirm --------------------------------------------


def checkout_payment_intent(*, saga_id: int, loaded: CheckoutSaga | None = None) -> CheckoutSaga:
    """The checkout's one PaymentIntent for a storefront that confirms with Stripe.js: created (not
    confirmed) if it does not exist yet, the same one on every call. The webhook then drives the saga as if
    the server had confirmed (orders/saga/listeners.py); a later :func:`checkout_confirm` confirms it.

    Raises ReservationExpired, CheckoutNotConfirmable, CheckoutInProgress, PaymentProviderBusy (nothing
    sent), PaymentTransientError (the create's outcome is unknown: the next call replays it).
    """
    wait = getattr(settings, "CARTFLOW_CHECKOUT_CONFIRM_WAIT_SECONDS", 5.0)
    with driving(saga_id, wait=wait, loaded=loaded) as saga:
        _settle_in_flight(saga)
        if saga.payment_intent_id:
            return saga
        _check_payable(saga)
        payment_steps.create_payment_intent(saga, release_lease=True)
        return saga


def checkout_confirm(
    *,
    saga_id: int,
    payment_method: str | None = None,
    confirmation_token: str | None = None,
    return_url: str | None = None,
    loaded: CheckoutSaga | None = None,
) -> CheckoutSaga:
    """Pay the checkout (create and confirm its PaymentIntent, or confirm the one it has) and, once paid,
    confirm the order. Exactly one of ``payment_method`` and ``confirmation_token``; ``return_url`` is where
    a redirect (3-D Secure) brings the buyer back, kept with them in the attempt's ``charge_params``.

    ``loaded``: the saga with its order, just read by the caller (saves reading it again).

    Returns the saga (``confirmed``/``fulfilled``, or ``requires_action`` for 3-D Secure). Raises
    PaymentDeclined (the checkout stays open), PaymentMethodInvalid (likewise), ReservationExpired,
    CheckoutNotConfirmable, CheckoutInProgress, PaymentProviderBusy (nothing sent, the checkout stays open),
    PaymentTransientError (outcome unknown: the step is ``indeterminate``).
    """
    method = {"confirmation_token": confirmation_token} if confirmation_token else {"payment_method": payment_method}
    if return_url:
        method["return_url"] = return_url
    wait = getattr(settings, "CARTFLOW_CHECKOUT_CONFIRM_WAIT_SECONDS", 5.0)
    with driving(saga_id, wait=wait, loaded=loaded) as saga:
        _settle_in_flight(saga)
        if saga.state == S.PAID and not saga.compensate_to:
            confirm(saga)
        if saga.state in (S.CONFIRMED, S.FULFILLED):
            return saga
        _check_payable(saga)
        if saga.state in (S.CONFIRMED, S.FULFILLED):  # it had been paid after all, and the stock was there
            return saga
        with compensating(saga):
            payment_steps.charge(saga, method=method)
        if saga.state == S.PAID:
            confirm(saga, release_lease=True)
        return saga


def _settle_in_flight(saga: CheckoutSaga) -> None:
    """Learn the outcome of a Stripe call that may have happened before anything else is sent: a create
    whose answer was lost is replayed with the same key (Stripe returns the intent it made), so an order
    never gets a second PaymentIntent."""
    if pending(saga, "create_payment_intent") and not saga.payment_intent_id:
        payment_steps.create_payment_intent(saga)
    elif pending(saga, "charge"):
        settle_charge(saga)


def _check_payable(saga: CheckoutSaga) -> None:
    """Raise unless the checkout may be paid now (an open checkout whose hold has not lapsed)."""
    if saga.state == S.EXPIRED:
        raise ReservationExpired(checkoutId=saga.public_id)
    if saga.state not in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION) or saga.compensate_to:
        raise CheckoutNotConfirmable(
            f"The checkout is {saga.state}.", checkoutId=saga.public_id, checkoutStatus=saga.state
        )
    if _hold_lapsed(saga):
        compensate(saga, to=S.EXPIRED)
        if saga.state not in (S.CONFIRMED, S.FULFILLED):
            raise ReservationExpired(checkoutId=saga.public_id)


def _hold_lapsed(saga: CheckoutSaga) -> bool:
    rows = reservations_for_holder(holder=saga.public_id)
    now = timezone.now()
    return not rows or any(
        r.status in ("EXPIRED", "RELEASED") or (r.status == "HELD" and r.expires_at <= now) for r in rows
    )


def saga_fulfil(*, checkout_id: str, outbox_id: int | None = None) -> CheckoutSaga:
    """Fulfil a confirmed checkout and mark its outbox event processed. Idempotent (at-least-once consumer).

    Authorize now, capture at fulfilment: an order whose money is only authorized is captured first, and
    handed on only once captured. A capture Stripe refuses ends the event too (the order waits for staff,
    see ``payment_steps.capture``); a transient failure raises, and the outbox task retries."""
    saga_pk = CheckoutSaga.objects.values_list("pk", flat=True).get(public_id=checkout_id)
    with driving(saga_pk, wait=2.0) as saga:
        if saga.state == S.CONFIRMED and payment_steps.capture_due(saga):
            payment_steps.capture(saga)
        if saga.state == S.CONFIRMED and not payment_steps.capture_refused(saga):
            steps.fulfil(saga)
        if outbox_id is not None and (saga.state == S.FULFILLED or payment_steps.capture_refused(saga)):
            Outbox.objects.filter(pk=outbox_id, processed_at__isnull=True).update(processed_at=timezone.now())
        return saga


# --- steps that may find the checkout cannot go on, and compensation ----------------------------------------


def confirm(saga: CheckoutSaga, *, release_lease: bool = False) -> None:
    """The confirm step; if the stock is gone after the buyer paid, refund and undo the rest."""
    with compensating(saga):
        steps.confirm(saga, release_lease=release_lease)


def settle_charge(saga: CheckoutSaga) -> None:
    """Settle an unknown charge outcome from Stripe; an intent canceled at Stripe fails the checkout."""
    with compensating(saga):
        payment_steps.settle_charge(saga)


@contextlib.contextmanager
def compensating(saga: CheckoutSaga) -> Iterator[None]:
    """Around steps that may find the checkout cannot go on (the PaymentIntent was canceled, the stock is
    gone after the buyer paid): the saga is undone as the step asks, and the caller carries on."""
    try:
        yield
    except CompensationRequired as why:
        compensate(saga, to=why.to, code=why.code, message=why.message)


def compensate(saga: CheckoutSaga, *, to: str, code: str = "", message: str = "") -> None:
    """Undo in reverse order, each undo safe twice, then end in ``to`` (failed / expired / cancelled).

    When expiring finds the PaymentIntent already succeeded (the buyer paid as the hold lapsed), the order
    is confirmed if the stock can still be taken, otherwise refunded. An authorization (manual capture) is
    voided by cancelling its PaymentIntent, expiry included: nothing was taken, so nothing is refunded.
    """
    if saga.state in (S.CONFIRMED, S.FULFILLED) or saga.is_terminal:
        return
    if saga.compensate_to != to or code:
        fields: dict[str, Any] = {"compensate_to": to}
        if code:
            fields.update(last_error_code=code[:64], last_error_message=message[:2000])
        # The same reason seen again (the expiry sweep and recovery both find the hold lapsed) is one event.
        save(saga, log=[("compensate", to, {"reason": code})], log_once=True, **fields)
    if saga.order_id is not None:
        if not saga.payment_intent_id and pending(saga, "charge"):
            settle_charge(saga)  # a create-and-confirm may have charged: learn it (raises if Stripe is away)
        intent = payment_steps.cancel_payment_intent(saga)
        if intent is not None and intent_outcome(intent) is IntentOutcome.PAID:
            if to == S.EXPIRED and steps.reserve_again(saga):
                payment_steps.record_paid_late(saga, intent)
                confirm(saga)
                return
            payment_steps.refund(saga, intent)
            if saga.state in (S.CONFIRMED, S.FULFILLED):
                return
        steps.cancel_order(saga)
    steps.release(saga, to=to)
    # The shop's systems hear of the end once compensation is complete (its order, if any, is cancelled).
    ended = order_event("checkout.expired" if to == S.EXPIRED else "order.cancelled")
    save(saga, log=[("end", to, None)], event=ended, state=to, compensate_to="", next_action=None)
    checkout_counted(to)
    log.info("checkout_compensated", checkout_id=saga.public_id, state=to, reason=code)


def checkout_cancel(*, saga_id: int) -> CheckoutSaga:
    """The buyer gives up: compensate to ``cancelled``. A paid or ended checkout cannot be cancelled."""
    with driving(saga_id, wait=2.0) as saga:
        if saga.state == S.CANCELLED:
            return saga
        if pending(saga, "charge"):
            settle_charge(saga)
        if saga.compensate_to == S.CANCELLED:
            # An earlier cancel was cut short (Redis or Stripe failed mid-compensation): every undo is safe
            # twice, so finishing it here answers the retry as the first cancel would have.
            compensate(saga, to=S.CANCELLED)
            return saga
        if saga.state not in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION) or saga.compensate_to:
            raise CheckoutNotCancellable(
                f"The checkout is {saga.state}.", checkoutId=saga.public_id, checkoutStatus=saga.state
            )
        compensate(saga, to=S.CANCELLED, code="cancelled_by_buyer", message="Cancelled by the buyer.")
        return saga


# --- recovery: a process that stopped mid-step ---------------------------------------------------------------


def saga_resume(*, saga_id: int) -> CheckoutSaga:
    """Finish or compensate a saga from what it persisted (recovery, admin "resume")."""
    with driving(saga_id) as saga:
        if saga.compensate_to:
            compensate(saga, to=saga.compensate_to)
            return saga
        if saga.state == S.RESERVED:
            try:
                _run_start(saga)
            except (InsufficientStock, InventoryContention):
                return saga  # compensated to failed by the start
        if pending(saga, "charge") or pending(saga, "create_payment_intent"):
            _settle_in_flight(saga)
        elif saga.state == S.REQUIRES_ACTION:
            settle_charge(saga)  # a lost webhook: ask Stripe
        if saga.state == S.PAID and not saga.compensate_to:
            confirm(saga)
        if saga.state == S.CONFIRMED and pending(saga, "capture"):
            payment_steps.capture(saga)  # a capture cut off mid-way: replayed under its key; the outbox fulfils
        if saga.state in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION) and _hold_lapsed(saga):
            compensate(saga, to=S.EXPIRED, code="reservation_expired", message="The hold expired.")
        return saga


def saga_compensate(*, saga_id: int, to: str = S.CANCELLED, reason: str = "compensated by an operator") -> CheckoutSaga:
    """Admin "compensate": undo a non-confirmed saga through the same compensation code.

    An operator giving up on a checkout cancels it, as a buyer's cancel does (``to``, ``cancelled``):
    ``failed`` is for the saga's own failures. A saga already compensating keeps the end it was going to
    (``compensate_to``: ``failed`` when the stock was gone after payment, ``expired`` when its hold lapsed);
    the operator only finishes it."""
    with driving(saga_id) as saga:
        if pending(saga, "charge"):
            settle_charge(saga)
        if saga.state in (S.CONFIRMED, S.FULFILLED) or saga.is_terminal:
            raise CheckoutNotCancellable(
                f"The checkout is {saga.state}.", checkoutId=saga.public_id, checkoutStatus=saga.state
            )
        compensate(saga, to=saga.compensate_to or to, code="operator", message=reason)
        return saga


def saga_recover(*, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
    """``recover_sagas``: resume every stuck saga; one failing does not stop the others."""
    counts = {"resumed": 0, "busy": 0, "errors": 0}
    for pk in list(sagas_stuck(now=now).order_by("updated_at").values_list("pk", flat=True)[:limit]):
        try:
            if now is not None:  # a caller looking ahead (tests, an operator) treats leases as lapsed
                CheckoutSaga.objects.filter(pk=pk, lease_expires_at__lt=now).update(
                    lease_owner="", lease_expires_at=None
                )
            saga_resume(saga_id=pk)
            counts["resumed"] += 1
        except CheckoutInProgress:
            counts["busy"] += 1
        except Exception:  # noqa: BLE001 - transient Stripe/Redis trouble: the next run tries again
            log.exception("saga_recover_failed", saga_pk=pk)
            counts["errors"] += 1
    return counts
