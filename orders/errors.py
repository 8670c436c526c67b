"""Domain errors of checkout and orders (codes from cartflow/problems.py, one class per code).

The checkout also passes on inventory's errors (inventory/errors.py: ``ProductNotFound``,
``InsufficientStock``, ``SoldOut``, ``FlashSaleBusy``, ``InventoryContention``, ``QuantityLimitExceeded``)
and the gateway's; refunds and cancellation pass on payments' refund errors (payments/errors.py:
``RefundExceedsRemaining``, ``RefundInProgress``, ``RefundFailed``).
"""

from __future__ import annotations

from cartflow.problems import DomainError


class CartEmpty(DomainError):
    code = "cart_empty"


class CheckoutNotFound(DomainError):
    code = "checkout_not_found"


class OrderNotFound(DomainError):
    code = "order_not_found"


class CheckoutInProgress(DomainError):
    """Another process drives this saga right now (its lease is live, or a version check was lost)."""

    code = "checkout_in_progress"


class TooManyActiveCheckouts(DomainError):
    """The client already holds as many unfinished checkouts as it may (orders/saga/hold_caps.py)."""

    code = "too_many_active_checkouts"


class PaymentDeclined(DomainError):
    code = "payment_declined"


class ReservationExpired(DomainError):
    code = "reservation_expired"


class CheckoutNotConfirmable(DomainError):
    code = "checkout_not_confirmable"


class CheckoutNotCancellable(DomainError):
    code = "checkout_not_cancellable"


class OrderNotRefundable(DomainError):
    """Not a confirmed or fulfilled order with a captured payment (unpaid, still checking out, cancelled)."""

    code = "order_not_refundable"


class OrderNotCancellable(DomainError):
    """Not a confirmed or fulfilled order that was paid or authorized (the buyer cancels an unpaid checkout)."""

    code = "order_not_cancellable"
