"""The steps that call Stripe, each beside its undo: create_payment_intent / cancel_payment_intent, and
charge / refund, with how a charge's outcome is settled and applied (orders/saga/intent_outcome.py decides
what the PaymentIntent's state means); and capture, which fulfilment runs first when the charge only
authorized the money (``CARTFLOW_CAPTURE_METHOD=manual``). The rules are those of orders/saga/steps.py;
here, in addition, a Stripe outcome that is unknown (timeout, lost response) leaves the step
``indeterminate``, and only the PaymentIntent as Stripe has it settles it.

An authorization is undone by cancelling its PaymentIntent (a void: the hold goes back to the card and no
money moved), so ``cancel_payment_intent`` is the undo of a charge that authorized, and ``refund`` only of one
that captured.
"""

from __future__ import annotations

from typing import Any

import structlog

from orders.errors import PaymentDeclined
from orders.metrics import compensation_counted
from orders.models import CheckoutSaga
from orders.outbound.events import order_event
from orders.saga.crashpoints import crash_point
from orders.saga.intent_outcome import IntentOutcome, holds_authorization, intent_outcome
from orders.saga.persistence import (
    ABOUT_TO,
    DONE,
    FAILED,
    INDETERMINATE,
    OrderChange,
    order_flagged_for_review,
    order_paid,
    order_records_intent,
    order_refunded,
    save,
    save_outcome,
)
from orders.saga.steps import CompensationRequired, about_to, announce, done, pending
from payments.errors import PaymentMethodInvalid, PaymentPermanentError, PaymentProviderBusy, PaymentTransientError
from payments.gateway import (
    payment_intent_cancel,
    payment_intent_capture,
    payment_intent_confirm,
    payment_intent_create,
    payment_intent_create_and_confirm,
    payment_intent_retrieve,
    refund_create,
)
from payments.interface import IntentResult
from payments.services import payment_sync_from_intent

log = structlog.get_logger("cartflow.checkout")
S = CheckoutSaga.State


# --- create_payment_intent / cancel_payment_intent ----------------------------------------------------------


def _create_intent(saga: CheckoutSaga) -> IntentResult:
    """The order's PaymentIntent, unconfirmed, keyed by the order: a replay returns the same intent."""
    order = saga.order
    return payment_intent_create(
        order_id=order.public_id,
        checkout_id=saga.public_id,
        amount=order.total,
        currency=order.currency,
        email=order.email or None,
    )


def create_payment_intent(saga: CheckoutSaga, *, release_lease: bool = False) -> None:
    """Create the order's PaymentIntent without confirming it, for a storefront that confirms with Stripe.js."""
    replay = pending(saga, "create_payment_intent")
    announce(saga, "create_payment_intent")
    try:
        intent = _create_intent(saga)
    except PaymentProviderBusy:
        # Nothing was sent now; an earlier create whose answer was lost stays to be replayed.
        status = INDETERMINATE if replay else FAILED
        save_outcome(saga, "create_payment_intent", status, details={"error": PaymentProviderBusy.code})
        raise
    except PaymentTransientError as exc:
        save_outcome(saga, "create_payment_intent", INDETERMINATE, details={"error": str(exc)[:200]})
        raise
    except PaymentPermanentError as exc:
        save_outcome(saga, "create_payment_intent", FAILED, details={"error": exc.stripe_code or str(exc)[:200]})
        raise
    done(
        saga,
        "create_payment_intent",
        order=order_records_intent(intent),
        details={"intent": intent.intent_id},
        release_lease=release_lease,
        payment_intent_id=intent.intent_id,
        client_secret=intent.client_secret or "",
    )
    saga.order.payment_intent_id, saga.order.payment_status = intent.intent_id, intent.status


def cancel_payment_intent(saga: CheckoutSaga) -> IntentResult | None:
    """Cancel the PI if the order has one. Returns the PI; ``succeeded`` means it was paid and could not be
    cancelled. A checkout that never created one costs Stripe nothing here. The caller has settled a
    pending charge first (a create-and-confirm may have made the order's intent)."""
    if not saga.payment_intent_id and pending(saga, "create_payment_intent"):
        # The create may have reached Stripe: ask again with the same key to learn the id, then cancel.
        try:
            intent = _create_intent(saga)
        except (PaymentTransientError, PaymentPermanentError, PaymentProviderBusy):
            return None  # nothing was confirmed on it; a stray PI without a payment method moves no money
        save(saga, order=order_records_intent(intent), payment_intent_id=intent.intent_id)
    if not saga.payment_intent_id:
        return None
    about_to(saga, "cancel_payment_intent")
    intent = payment_intent_cancel(order_id=saga.order.public_id, intent_id=saga.payment_intent_id)
    done(saga, "cancel_payment_intent", details={"status": intent.status}, order=order_records_intent(intent))
    compensation_counted("cancel_payment_intent")
    return intent


# --- charge / refund --------------------------------------------------------------------------------------


def charge(saga: CheckoutSaga, *, method: dict[str, str | None]) -> None:
    """Pay: without an intent, create AND confirm the order's one PaymentIntent in one call; with one (a
    retry after a decline, or after ``/payment-intent``), confirm it. Every attempt has its own Stripe
    idempotency key (order + attempt) and persists what it pays with before the call, so a lost answer is
    replayed exactly; one PaymentIntent per order means at most one capture whatever happens."""
    attempt = saga.attempt + 1
    about_to(
        saga,
        "charge",
        details={"attempt": attempt},
        attempt=attempt,
        charge_params=method,
        last_error_code="",
        last_error_message="",
    )
    try:
        intent = _charge_call(saga)
    except PaymentProviderBusy:
        # Nothing was sent: no decline, no compensation, the hold is kept; the same request may be retried.
        save_outcome(saga, "charge", FAILED, details={"error": PaymentProviderBusy.code})
        raise
    except PaymentMethodInvalid as exc:
        _record_method_invalid(saga, exc)
        raise
    except PaymentTransientError as exc:
        save_outcome(saga, "charge", INDETERMINATE, details={"error": str(exc)})
        settle_charge(saga)  # maybe Stripe answers a retrieve (or the replayed create) now
        if saga.step_status == INDETERMINATE or saga.state == S.AWAITING_PAYMENT:
            raise
        return
    except PaymentPermanentError as exc:
        code = exc.stripe_code or "invalid_payment_method"
        _record_decline(saga, code=code, message=str(exc))
        raise PaymentDeclined(str(exc), declineCode=code, checkoutId=saga.public_id) from exc
    apply_intent(saga, intent, raise_decline=True)


def _charge_call(saga: CheckoutSaga) -> IntentResult:
    """The current attempt's Stripe call, keyed by order + attempt: replaying it repeats the same request."""
    order, method = saga.order, saga.charge_params
    if saga.payment_intent_id:
        return payment_intent_confirm(
            order_id=order.public_id, intent_id=saga.payment_intent_id, attempt=saga.attempt, **method
        )
    return payment_intent_create_and_confirm(
        order_id=order.public_id,
        checkout_id=saga.public_id,
        amount=order.total,
        currency=order.currency,
        email=order.email or None,
        attempt=saga.attempt,
        **method,
    )


def settle_charge(saga: CheckoutSaga) -> None:
    """An unknown charge outcome is settled only by the PaymentIntent as Stripe has it now: retrieved when
    the saga knows it, else by replaying the attempt's create-and-confirm (same key, same parameters), which
    returns what the first call did.

    A replay is recorded on the order's Payment row by the gateway like every write; a read is not, so what
    it learnt is recorded here, before the saga acts on it: whoever settles the saga (the confirm's answer,
    the webhook, recovery) leaves the Payment row saying what the PaymentIntent says."""
    if saga.payment_intent_id:
        intent = payment_intent_retrieve(intent_id=saga.payment_intent_id)
        payment_sync_from_intent(intent=intent)
    elif not saga.charge_params:
        intent = None
    else:
        try:
            intent = _charge_call(saga)
        except PaymentMethodInvalid as exc:
            _record_method_invalid(saga, exc)
            return
    if intent is None or intent_outcome(intent) is IntentOutcome.NOT_CONFIRMED:
        # The confirm never took effect: nothing charged, the checkout stays open.
        save_outcome(
            saga,
            "charge",
            FAILED,
            details={"settled": intent.status if intent else "not_sent", "attempt": saga.attempt},
            log_once=True,
            state=S.AWAITING_PAYMENT,
            **(intent_link(saga, intent) if intent is not None else {}),
        )
        return
    apply_intent(saga, intent, raise_decline=False)


def intent_link(saga: CheckoutSaga, intent: IntentResult) -> dict[str, Any]:
    """The saga learns the order's one PaymentIntent (the first create-and-confirm, or a replay of it)."""
    if saga.payment_intent_id:
        return {}
    return {"payment_intent_id": intent.intent_id, "client_secret": intent.client_secret or ""}


def apply_intent(saga: CheckoutSaga, intent: IntentResult, *, raise_decline: bool) -> None:
    """Move the saga forward to what the PaymentIntent says (never backwards). A saga that did not know
    its PaymentIntent yet (the first create-and-confirm) records it in the same write. Raises
    PaymentDeclined (``raise_decline``) and CompensationRequired (the intent was canceled).

    The same news comes more than once (the confirm's answer, then the webhook, reconciliation, recovery's
    re-read): each outcome is logged once per attempt (``log_once``), a later attempt gets its own row."""
    link = intent_link(saga, intent)
    match intent_outcome(intent):
        case IntentOutcome.PAID | IntentOutcome.AUTHORIZED:
            # An authorization confirms the order like a payment; its money is captured at fulfilment.
            record_paid(saga, intent, **link)
        case IntentOutcome.NEEDS_ACTION:
            done(
                saga,
                "charge",
                details={"status": intent.status, "attempt": saga.attempt},
                log_once=True,
                order=order_records_intent(intent),
                state=S.REQUIRES_ACTION,
                next_action=intent.next_action,
                **{**link, "client_secret": intent.client_secret or saga.client_secret},
            )
        case IntentOutcome.DECLINED:
            code = intent.decline_code or intent.error_code or "card_declined"
            message = intent.error_message or ""
            _record_decline(
                saga, code=code, message=message, order=order_records_intent(intent), charge_id=intent.charge_id, **link
            )
            if raise_decline:
                raise PaymentDeclined(
                    intent.error_message or "The card was declined.", declineCode=code, checkoutId=saga.public_id
                )
        case IntentOutcome.CANCELED:
            if link:
                save(saga, order=order_records_intent(intent), **link)
            raise CompensationRequired(to=S.FAILED, code="payment_canceled", message="The PaymentIntent was canceled.")
        case IntentOutcome.PENDING | IntentOutcome.NOT_CONFIRMED:
            # Processing: the webhook or recovery settles it. (A settle and the listener decide a confirm
            # that never took effect before they get here.)
            save_outcome(
                saga,
                "charge",
                INDETERMINATE,
                details={"status": intent.status, "attempt": saga.attempt},
                log_once=True,
                order=order_records_intent(intent) if link else None,
                **link,
            )


def record_paid(saga: CheckoutSaga, intent: IntentResult, **link: Any) -> None:
    """Persist "charge done": the saga and its order paid (or authorized: the order's payment status says
    ``requires_capture``). Every caller confirms a paid saga next, so "about to confirm" rides on it, unless
    the saga is compensating."""
    crash_point("charge:after")
    log_rows = [("charge", DONE, {"status": intent.status, "attempt": saga.attempt})]
    step = {"step": "charge", "step_status": DONE}
    if not saga.compensate_to:
        log_rows.append(("confirm", ABOUT_TO, None))
        step = {"step": "confirm", "step_status": ABOUT_TO}
    save(saga, log=log_rows, order=order_paid(intent), state=S.PAID, next_action=None, **step, **link)


def record_paid_late(saga: CheckoutSaga, intent: IntentResult) -> None:
    """The intent was found paid while the checkout expired, and the stock was taken again: the saga stops
    compensating and is paid after all."""
    save(
        saga,
        log=[("charge", DONE, {"late": True})],
        order=order_paid(intent),
        compensate_to="",
        step="charge",
        step_status=DONE,
        state=S.PAID,
    )


def _record_decline(
    saga: CheckoutSaga,
    *,
    code: str,
    message: str,
    order: OrderChange | None = None,
    charge_id: str | None = None,
    **link: Any,
) -> None:
    """The charge failed and the checkout stays open; ``payment.failed`` goes out, and "charge failed" is
    logged, once per failed charge (Stripe's charge id, else the attempt), however many times the decline is
    seen (answer, webhook, reconciliation, recovery)."""
    save_outcome(
        saga,
        "charge",
        FAILED,
        details={"declineCode": code, "attempt": saga.attempt, **({"charge": charge_id} if charge_id else {})},
        log_once=True,
        order=order,
        event=order_event("payment.failed", key=f"payment.failed:{charge_id or f'attempt-{saga.attempt}'}"),
        step="charge",
        state=S.AWAITING_PAYMENT,
        next_action=None,
        last_error_code=code,
        last_error_message=message[:2000],
        **link,
    )


def _record_method_invalid(saga: CheckoutSaga, exc: PaymentMethodInvalid) -> None:
    """Stripe refused what the buyer pays with: not a decline, the checkout stays as it was."""
    intent = exc.intent
    save_outcome(
        saga,
        "charge",
        FAILED,
        details={"error": PaymentMethodInvalid.code, "attempt": saga.attempt},
        order=order_records_intent(intent) if intent is not None else None,
        step="charge",
        last_error_code=PaymentMethodInvalid.code,
        last_error_message=str(exc)[:2000],
        **(intent_link(saga, intent) if intent is not None else {}),
    )


def refund(saga: CheckoutSaga, intent: IntentResult) -> None:
    """Give the money back. Before that, re-read the saga: another attempt (a webhook, a second confirm)
    may have completed the order meanwhile (Medusa #13301)."""
    fresh = CheckoutSaga.objects.get(pk=saga.pk)
    if fresh.state in (S.CONFIRMED, S.FULFILLED) or fresh.version != saga.version:
        saga.state = fresh.state
        return
    # Always ask Stripe (keyed by the order): a refund that already happened is returned, not repeated.
    about_to(saga, "refund")
    refunded = refund_create(order_id=saga.order.public_id, intent_id=intent.intent_id)
    done(
        saga,
        "refund",
        details={"refund": refunded.refund_id, "amount": refunded.amount},
        order=order_refunded(refunded.amount),
        event=order_event("order.refunded", key=f"order.refunded:{refunded.refund_id}"),
    )
    compensation_counted("refund")


# --- capture (fulfilment's first step when the charge only authorized) --------------------------------------


def capture_due(saga: CheckoutSaga) -> bool:
    """The order's money is authorized and not taken yet, or a capture was cut off (a crash, a lost answer)."""
    return pending(saga, "capture") or holds_authorization(saga.order.payment_status)


def capture_refused(saga: CheckoutSaga) -> bool:
    """Stripe would not capture (the authorization expired or was voided at Stripe): the saga waits for staff."""
    return saga.step == "capture" and saga.step_status == FAILED and saga.requires_human


def capture(saga: CheckoutSaga) -> None:
    """Take the authorized money: ONE key for the order (``cf:<order>:capture``), so a capture replayed after a
    crash or a lost answer returns the one Stripe made, never a second. Outside any transaction, "about to"
    before and "done" after like every step.

    Captured → "capture done", the order's payment ``succeeded``. Nothing to capture any more (the PaymentIntent
    is ``canceled``: the authorization expired, or was voided in Stripe's dashboard) or the capture refused →
    :func:`capture_refused`: the order is not fulfilled; it stays confirmed with its stock, flagged for review
    and handed to staff (``requires_human``), who cancel it (the stock goes back) or take payment another way.
    A confirmed order is never compensated by the saga (docs/checkout-saga.md, "When a capture is refused").
    Raises PaymentTransientError / PaymentProviderBusy (the outbox task retries, with the same key)."""
    replay = pending(saga, "capture")
    about_to(saga, "capture")
    try:
        intent = payment_intent_capture(order_id=saga.order.public_id, intent_id=saga.payment_intent_id)
    except PaymentProviderBusy:
        # Nothing was sent now; a capture whose answer was lost stays to be replayed.
        save_outcome(saga, "capture", INDETERMINATE if replay else FAILED, details={"error": PaymentProviderBusy.code})
        raise
    except PaymentTransientError as exc:
        save_outcome(saga, "capture", INDETERMINATE, details={"error": str(exc)[:200]})
        raise
    except PaymentPermanentError as exc:
        _record_capture_refused(saga, None, code=exc.stripe_code or "capture_refused", message=str(exc))
        return
    match intent_outcome(intent):
        case IntentOutcome.PAID:
            details = {"amount": intent.amount_received}
            done(saga, "capture", details=details, order=order_records_intent(intent))
        case IntentOutcome.CANCELED:
            message = "The authorization was canceled at Stripe (expired or voided) before it was captured."
            _record_capture_refused(saga, intent, code="authorization_canceled", message=message)
        case _:  # still authorized, or processing: not settled yet; the outbox task asks again
            save_outcome(saga, "capture", INDETERMINATE, details={"status": intent.status})
            raise PaymentTransientError(f"The capture of {intent.intent_id} is {intent.status}; asking again later.")


def _record_capture_refused(saga: CheckoutSaga, intent: IntentResult | None, *, code: str, message: str) -> None:
    save_outcome(
        saga,
        "capture",
        FAILED,
        details={"error": code, **({"status": intent.status} if intent is not None else {})},
        order=order_flagged_for_review(intent),
        requires_human=True,
        human_reason=f"Capture refused ({code}): {message} Nothing was charged; cancel the order to put its "
        "stock back, or take payment another way.",
        last_error_code=code[:64],
        last_error_message=message[:2000],
    )
    log.error("capture_refused", checkout_id=saga.public_id, order_id=saga.order.public_id, code=code)
