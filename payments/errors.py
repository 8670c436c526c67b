"""The errors of payments, one class per problem code of the registry in cartflow/problems.py.

The gateway (payments/gateway.py) and the shared Stripe budget (payments/budget.py) raise the payment
errors, webhook intake (payments/webhooks/intake.py) the webhook ones; the exception handler renders each
``DomainError`` from its code. :class:`PaymentPermanentError` is deliberately not a ``DomainError``: it is
a bug on our side that no client can act on, so the handler answers ``internal_error`` and logs it.
"""

from __future__ import annotations

from typing import Any

from cartflow.problems import DomainError
from payments.interface import IntentResult


class PaymentTransientError(DomainError):
    """Stripe could not be reached or answered "try again": the OUTCOME IS UNKNOWN. Retry with the same key."""

    code = "payment_provider_unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = 2, **kwargs: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **kwargs)
        self.stripe_code: str | None = None


class PaymentProviderBusy(DomainError):
    """The shared Stripe budget had no token within the wait: NOTHING WAS SENT to Stripe, so nothing happened.

    Raised before the request leaves this process; the caller keeps its state (the reservation stays held)
    and the buyer may retry the same request after ``retry_after`` seconds.
    """

    code = "payment_provider_busy"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = 1, **kwargs: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **kwargs)


class PaymentMethodInvalid(DomainError):
    """Stripe refused the payment method or confirmation token itself (unknown, detached, unusable).

    A client error, not a decline: the intent is left as it was and the buyer may send another method.
    ``intent``: the PaymentIntent when the call created one before refusing what was sent, else None.
    """

    code = "payment_method_invalid"
    intent: IntentResult | None = None


class PaymentPermanentError(Exception):
    """Stripe refused the request as invalid (other than the known state races): a bug, surface it."""

    def __init__(self, message: str, *, stripe_code: str | None = None) -> None:
        super().__init__(message)
        self.stripe_code = stripe_code


class RefundExceedsRemaining(DomainError):
    """More asked for than is left of the payment (or nothing is left): nothing was reserved or sent."""

    code = "refund_exceeds_remaining"


class RefundInProgress(DomainError):
    """A numbered refund of this payment has not settled yet; no second one starts meanwhile."""

    code = "refund_in_progress"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = 2, **kwargs: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **kwargs)


class RefundFailed(DomainError):
    """Stripe refused the refund, or it failed (status ``failed``/``canceled``): its amount is free again."""

    code = "refund_failed"


class WebhookSignatureInvalid(DomainError):
    """The Stripe-Signature header is missing, does not match the body, or is older than the tolerance."""

    code = "webhook_signature_invalid"


class MalformedEvent(DomainError):
    """A body that is not UTF-8, or signed but not a Stripe event carrying a ``data.object``."""

    code = "malformed_event"
