"""What the Stripe gateway answers: typed results that the gateway and its callers both import.

The gateway (payments/gateway.py) builds these from Stripe's objects; services, webhook handlers,
reconciliation and the orders app read them. Keeping them apart from the adapter means no caller imports
``stripe`` or the gateway's internals to know what a PaymentIntent looks like, and the gateway never
imports its callers to use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The statuses from which Stripe lets a PaymentIntent be canceled.
CANCELABLE = ("requires_payment_method", "requires_capture", "requires_confirmation", "requires_action", "processing")


@dataclass(frozen=True)
class IntentResult:
    intent_id: str
    status: str
    amount: int
    currency: str
    client_secret: str | None
    next_action: dict | None = None
    decline_code: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    metadata: dict = field(default_factory=dict)
    # Money given back (refunds), never the released rest of an authorization (docs/payments.md).
    amount_refunded: int = 0
    amount_received: int = 0  # taken: captured at confirm, or by a capture (manual capture)
    amount_capturable: int = 0  # held on the card by an authorization (``requires_capture``), not taken yet
    disputed: bool = False
    charge_id: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def declined(self) -> bool:
        return bool(self.decline_code or self.error_code) and self.status == "requires_payment_method"

    @property
    def requires_action(self) -> bool:
        return self.status == "requires_action"

    @property
    def canceled(self) -> bool:
        return self.status == "canceled"

    @property
    def order_id(self) -> str | None:
        return self.metadata.get("order_id")


@dataclass(frozen=True)
class RefundResult:
    refund_id: str
    status: str  # pending, requires_action, succeeded, failed, canceled (Stripe's refund statuses)
    amount: int
    intent_id: str | None = None
    metadata: dict = field(default_factory=dict)
    failure_reason: str | None = None

    @property
    def seq(self) -> int | None:
        """The number CartFlow gave the refund (``metadata.refund_seq``); None for one made elsewhere."""
        raw = self.metadata.get("refund_seq")
        return int(raw) if raw and str(raw).isdigit() else None
