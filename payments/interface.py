"""What the Stripe gateway answers: typed results that the gateway and its callers both import.

The gateway (payments/gateway.py) builds these from Stripe's objects with :func:`intent_result` and
:func:`refund_result` (below); services, webhook handlers,
reconciliation and the orders app read them. Keeping them apart from the adapter means no caller imports
``stripe`` or the gateway's internals to know what a PaymentIntent looks like, and the gateway never
imports its callers to use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


# --- from Stripe's objects (plain data: no ``stripe`` import needed) ---


def intent_result(pi: Any, **overrides: Any) -> IntentResult:
    """A PaymentIntent as Stripe sent it (a StripeObject or its dict; ``latest_charge`` expanded or not) as
    an :class:`IntentResult`; ``overrides`` that are not None replace what Stripe said."""
    data = pi.to_dict() if hasattr(pi, "to_dict") else dict(pi)
    latest = data.get("latest_charge")
    charge = latest if isinstance(latest, dict) else {}
    if not charge and isinstance(data.get("charges"), dict):  # older API versions (and localstripe)
        charges = data["charges"].get("data") or []
        charge = charges[-1] if charges else {}
    lpe = data.get("last_payment_error") or {}
    received = int(data.get("amount_received") or 0)
    values: dict[str, Any] = {
        "intent_id": data["id"],
        "status": data["status"],
        "amount": int(data.get("amount") or 0),
        "currency": (data.get("currency") or "").lower(),
        "client_secret": data.get("client_secret"),
        "next_action": data.get("next_action") or None,
        "decline_code": lpe.get("decline_code"),
        "error_code": lpe.get("code"),
        "error_message": lpe.get("message"),
        "metadata": dict(data.get("metadata") or {}),
        "amount_refunded": money_refunded(charge),
        "amount_received": received,
        "amount_capturable": int(data.get("amount_capturable") or 0),
        "disputed": bool(charge.get("disputed")),
        "charge_id": charge.get("id")
        or (data.get("latest_charge") if isinstance(data.get("latest_charge"), str) else None),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return IntentResult(**values)


def money_refunded(charge: dict[str, Any]) -> int:
    """What was given back of what was taken. Stripe counts an authorization's released hold in the charge's
    ``amount_refunded`` (a void, an expiry, the uncaptured rest of a partial capture), but no money moved:
    an order's refunds are only what exceeds that release. Charges without ``amount_captured`` (older API
    versions, localstripe) count as captured whole."""
    refunded = int(charge.get("amount_refunded") or 0)
    if "amount_captured" not in charge:
        return refunded
    if charge.get("captured") is False:
        return 0
    released = int(charge.get("amount") or 0) - int(charge.get("amount_captured") or 0)
    return max(0, refunded - released)


def refund_result(refund: Any) -> RefundResult:
    """A Refund as Stripe sent it, as a :class:`RefundResult`."""
    data = refund.to_dict() if hasattr(refund, "to_dict") else dict(refund)
    intent = data.get("payment_intent")
    return RefundResult(
        refund_id=data["id"],
        status=data.get("status") or "",
        amount=int(data.get("amount") or 0),
        intent_id=intent.get("id") if isinstance(intent, dict) else intent,
        metadata=dict(data.get("metadata") or {}),
        failure_reason=data.get("failure_reason"),
    )
