"""What a PaymentIntent's state means for a checkout: the one place that reads a PaymentIntent's status.

The confirm's own answer, a settle after an unknown outcome (the same request, the next one, recovery),
the webhook and reconciliation (both through payments' intent listener) and a compensation that finds the
intent paid all ask :func:`intent_outcome`, then act on the answer (``apply_intent`` in
orders/saga/payment_steps.py moves the saga to it). Fulfilment asks :func:`holds_authorization` whether the
order's money still has to be captured.
"""

from __future__ import annotations

from enum import Enum

from payments.interface import IntentResult


class IntentOutcome(Enum):
    PAID = "paid"  # succeeded: the money is captured; the checkout confirms (or, dead, refunds)
    # requires_capture (CARTFLOW_CAPTURE_METHOD=manual): the money is held on the card, not taken; the checkout
    # confirms as if paid and its fulfilment captures (or, dead, voids: cancelling it gives the hold back)
    AUTHORIZED = "authorized"
    NEEDS_ACTION = "needs_action"  # requires_action: 3-D Secure; the webhook brings the result
    DECLINED = "declined"  # requires_payment_method with a decline: the checkout stays open for another card
    CANCELED = "canceled"  # canceled at Stripe: nothing can be paid on it; the checkout fails
    NOT_CONFIRMED = "not_confirmed"  # requires_payment_method/confirmation, no error: the confirm never took effect
    PENDING = "pending"  # processing (and anything else): the webhook or recovery settles it


def intent_outcome(intent: IntentResult) -> IntentOutcome:
    return status_outcome(intent.status, declined=bool(intent.decline_code or intent.error_code))


def status_outcome(status: str, *, declined: bool = False) -> IntentOutcome:
    """``declined``: Stripe reported a decline or error with the status (only ``requires_payment_method``
    carries one)."""
    if status == "succeeded":
        return IntentOutcome.PAID
    if status == "requires_capture":
        return IntentOutcome.AUTHORIZED
    if status == "requires_action":
        return IntentOutcome.NEEDS_ACTION
    if status == "canceled":
        return IntentOutcome.CANCELED
    if status == "requires_payment_method":
        return IntentOutcome.DECLINED if declined else IntentOutcome.NOT_CONFIRMED
    if status == "requires_confirmation":
        return IntentOutcome.NOT_CONFIRMED
    return IntentOutcome.PENDING


def holds_authorization(payment_status: str) -> bool:
    """An order whose recorded payment status is this still has its money to capture. Decided by what the
    order's PaymentIntent is, not by ``CARTFLOW_CAPTURE_METHOD``, so switching the setting leaves the
    authorizations already made to be captured."""
    return status_outcome(payment_status) is IntentOutcome.AUTHORIZED
