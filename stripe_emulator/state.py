"""The operations that change the emulator's objects: the PaymentIntent state machine and refunds.

Each runs under the store's lock (store.py) and records an event for every state change, like Stripe's.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, invalid, missing_param, no_such, unexpected_state
from .forms import as_bool
from .params import (
    check_return_url,
    merge_metadata,
    parse_amount,
    parse_currency,
    parse_int,
    parse_metadata,
    reject_unknown,
)
from .store import RequestInfo, Store, new_id, public
from .testcards import GENERIC_DECLINE, TEST_CARDS, TestCard

_CANCELABLE = ("requires_payment_method", "requires_capture", "requires_confirmation", "requires_action", "processing")
_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
# How long Stripe keeps an online card authorization (``requires_capture``) before it cancels the
# PaymentIntent itself: seven days from the authorization.
AUTHORIZATION_SECONDS = 7 * 24 * 3600
_CREATE_PARAMS = {
    "amount", "currency", "confirm", "payment_method", "payment_method_types", "metadata", "capture_method",
    "confirmation_method", "description", "receipt_email", "customer", "automatic_payment_methods", "return_url",
    "expand", "statement_descriptor", "statement_descriptor_suffix", "setup_future_usage", "off_session",
    "error_on_requires_action", "use_stripe_sdk", "payment_method_options", "shipping", "transfer_group",
    "on_behalf_of", "application_fee_amount", "mandate_data", "payment_method_data", "radar_options",
    "payment_method_configuration", "confirmation_token", "transfer_data",
}  # fmt: skip
_CONFIRM_PARAMS = {
    "payment_method", "return_url", "expand", "off_session", "error_on_requires_action", "payment_method_options",
    "receipt_email", "setup_future_usage", "mandate_data", "use_stripe_sdk", "capture_method", "shipping",
    "payment_method_data", "payment_method_types", "radar_options", "confirmation_token",
}  # fmt: skip
_REFUND_STATUSES = ("pending", "succeeded", "failed", "canceled")
_REFUND_COUNTED = ("pending", "succeeded")  # what the charge's amount_refunded adds up
_UPDATE_PARAMS = {
    "amount", "currency", "metadata", "description", "payment_method", "receipt_email", "expand",
    "capture_method", "setup_future_usage", "shipping", "statement_descriptor", "payment_method_types",
}  # fmt: skip


class EmulatorState(Store):
    """The emulator's objects (store.py) and the operations of Stripe's API on them."""

    # -- PaymentIntents ---------------------------------------------------------------------------------------
    def payment_intent_create(self, params: dict[str, Any], req: RequestInfo | None = None) -> dict[str, Any]:
        reject_unknown(params, _CREATE_PARAMS)
        check_return_url(params)
        amount = parse_amount(params)
        currency = parse_currency(params)
        capture_method = params.get("capture_method", "automatic")
        if capture_method not in ("automatic", "automatic_async", "manual"):
            raise invalid(
                "Invalid capture_method: must be one of automatic, automatic_async, or manual", param="capture_method"
            )
        confirmation_method = params.get("confirmation_method", "automatic")
        if confirmation_method not in ("automatic", "manual"):
            raise invalid(
                "Invalid confirmation_method: must be one of automatic or manual", param="confirmation_method"
            )
        metadata = parse_metadata(params.get("metadata"))
        confirm = as_bool(params.get("confirm"))
        apm = params.get("automatic_payment_methods")
        apm_enabled = isinstance(apm, dict) and as_bool(apm.get("enabled"))
        with self.lock:
            pm_id = self._payment_method(params["payment_method"])["id"] if params.get("payment_method") else None
            pi_id = new_id("pi")
            pi: dict[str, Any] = {
                "id": pi_id,
                "object": "payment_intent",
                "amount": amount,
                "amount_capturable": 0,
                "amount_details": {"tip": {}},
                "amount_received": 0,
                "application": None,
                "application_fee_amount": None,
                "automatic_payment_methods": {"allow_redirects": "always", "enabled": True} if apm_enabled else None,
                "canceled_at": None,
                "cancellation_reason": None,
                "capture_method": capture_method,
                "client_secret": f"{pi_id}_secret_{new_id('x', 25)[2:]}",
                "confirmation_method": confirmation_method,
                "created": int(self.now()),
                "currency": currency,
                "customer": params.get("customer"),
                "description": params.get("description"),
                "last_payment_error": None,
                "latest_charge": None,
                "livemode": False,
                "metadata": metadata,
                "next_action": None,
                "on_behalf_of": None,
                "payment_method": pm_id,
                "payment_method_configuration_details": None,
                "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
                "payment_method_types": list(params.get("payment_method_types") or ["card"]),
                "processing": None,
                "receipt_email": params.get("receipt_email"),
                "review": None,
                "setup_future_usage": params.get("setup_future_usage"),
                "shipping": None,
                "source": None,
                "statement_descriptor": params.get("statement_descriptor"),
                "statement_descriptor_suffix": None,
                "status": "requires_confirmation" if pm_id else "requires_payment_method",
                "transfer_data": None,
                "transfer_group": params.get("transfer_group"),
            }
            self.payment_intents[pi_id] = pi
            self._emit("payment_intent.created", pi, req)
            if confirm:
                self._confirm(pi, params, req)
            return self.render(pi, params.get("expand"))

    def payment_intent_update(
        self, pi_id: str, params: dict[str, Any], req: RequestInfo | None = None
    ) -> dict[str, Any]:
        reject_unknown(params, _UPDATE_PARAMS)
        with self.lock:
            pi = self._intent(pi_id)
            if pi["status"] in ("succeeded", "canceled", "processing"):
                raise unexpected_state(
                    f"This PaymentIntent's amount could not be updated because it has a status of {pi['status']}. "
                    "You may only update the amount of a PaymentIntent with one of the following statuses: "
                    "requires_payment_method, requires_confirmation, requires_action.",
                    payment_intent=self.render(pi),
                )
            if "amount" in params:
                pi["amount"] = parse_amount(params)
            if "currency" in params:
                pi["currency"] = parse_currency(params)
            if "metadata" in params:
                pi["metadata"] = merge_metadata(pi["metadata"], params["metadata"])
            for field in ("description", "receipt_email", "setup_future_usage", "statement_descriptor"):
                if field in params:
                    pi[field] = params[field] or None
            if params.get("payment_method"):
                pi["payment_method"] = self._payment_method(params["payment_method"])["id"]
                if pi["status"] == "requires_payment_method":
                    pi["status"] = "requires_confirmation"
            return self.render(pi, params.get("expand"))

    def payment_intent_confirm(
        self, pi_id: str, params: dict[str, Any], req: RequestInfo | None = None
    ) -> dict[str, Any]:
        reject_unknown(params, _CONFIRM_PARAMS)
        check_return_url(params)
        with self.lock:
            pi = self._intent(pi_id)
            if pi["status"] not in _CONFIRMABLE:
                raise unexpected_state(
                    f"This PaymentIntent's status is {pi['status']}, but must be one of requires_payment_method, "
                    "requires_confirmation, or requires_action to be confirmed."
                    if pi["status"] != "succeeded"
                    else "You cannot confirm this PaymentIntent because it has already succeeded after being "
                    "previously confirmed.",
                    payment_intent=self.render(pi),
                )
            self._confirm(pi, params, req)
            return self.render(pi, params.get("expand"))

    def payment_intent_cancel(
        self, pi_id: str, params: dict[str, Any], req: RequestInfo | None = None
    ) -> dict[str, Any]:
        reject_unknown(params, {"cancellation_reason", "expand"})
        reason = params.get("cancellation_reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer", "abandoned"):
            raise invalid(
                "Invalid cancellation_reason: must be one of duplicate, fraudulent, requested_by_customer, "
                "or abandoned",
                param="cancellation_reason",
            )
        with self.lock:
            self.expire_authorizations()
            pi = self._intent(pi_id)
            if pi["status"] not in _CANCELABLE:
                raise unexpected_state(
                    f"You cannot cancel this PaymentIntent because it has a status of {pi['status']}. Only a "
                    "PaymentIntent with one of the following statuses may be canceled: " + ", ".join(_CANCELABLE) + ".",
                    payment_intent=self.render(pi),
                )
            self._cancel(pi, reason, req)
            return self.render(pi, params.get("expand"))

    def payment_intent_capture(
        self, pi_id: str, params: dict[str, Any], req: RequestInfo | None = None
    ) -> dict[str, Any]:
        reject_unknown(params, {"amount_to_capture", "expand", "metadata", "statement_descriptor", "final_capture"})
        with self.lock:
            self.expire_authorizations()
            pi = self._intent(pi_id)
            if pi["status"] != "requires_capture":
                raise unexpected_state(
                    f"This PaymentIntent could not be captured because it has a status of {pi['status']}. Only a "
                    "PaymentIntent with one of the following statuses may be captured: requires_capture.",
                    payment_intent=self.render(pi),
                )
            capturable = pi["amount_capturable"]
            amount = parse_int(params.get("amount_to_capture", capturable), "amount_to_capture")
            if amount > capturable or amount < 1:
                raise ApiError(
                    400,
                    f"The amount to capture ({amount}) must be between 1 and the amount capturable ({capturable}).",
                    code="amount_too_large",
                    param="amount_to_capture",
                )
            charge = self.charges[pi["latest_charge"]]
            charge.update(captured=True, amount_captured=amount, amount_refunded=charge["amount"] - amount)
            if "metadata" in params:
                pi["metadata"] = merge_metadata(pi["metadata"], params["metadata"])
            pi.update(status="succeeded", amount_received=amount, amount_capturable=0)
            self._emit("charge.captured", charge, req)
            self._emit("payment_intent.succeeded", pi, req)
            return self.render(pi, params.get("expand"))

    def expire_authorizations(self) -> list[str]:
        """Cancel every authorization older than :data:`AUTHORIZATION_SECONDS` on the emulator's clock, as
        Stripe does (``cancellation_reason: automatic``; events ``charge.expired``, ``payment_intent.canceled``).
        Run before a capture or cancel and when the clock is moved; returns the PaymentIntents it canceled."""
        with self.lock:
            cutoff = self.now() - AUTHORIZATION_SECONDS
            expired = []
            for pi in self.payment_intents.values():
                charge = self.charges.get(pi["latest_charge"] or "")
                if pi["status"] == "requires_capture" and charge is not None and charge["created"] <= cutoff:
                    self._emit("charge.expired", self._release(charge), None)
                    self._cancel(pi, "automatic", None)
                    expired.append(pi["id"])
            return expired

    def payment_intent_authenticate(self, pi_id: str, outcome: str) -> dict[str, Any]:
        """Complete (``succeed``) or fail (``fail``) the 3-D Secure step of a PaymentIntent in ``requires_action``."""
        with self.lock:
            pi = self._intent(pi_id)
            if pi["status"] != "requires_action":
                raise unexpected_state(
                    f"This PaymentIntent has a status of {pi['status']}; "
                    "only one in requires_action can be authenticated.",
                    payment_intent=self.render(pi),
                )
            pi["next_action"] = None
            if outcome == "fail":
                pm = self.payment_methods.get(pi["payment_method"] or "")
                pi.update(
                    status="requires_payment_method",
                    payment_method=None,
                    last_payment_error={
                        "code": "payment_intent_authentication_failure",
                        "doc_url": "https://stripe.com/docs/error-codes/payment-intent-authentication-failure",
                        "message": "The provided PaymentMethod has failed authentication. You can provide "
                        "payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
                        "payment_method": public(pm) if pm else None,
                        "type": "invalid_request_error",
                    },
                )
                self._emit("payment_intent.payment_failed", pi, None)
            elif pi["confirmation_method"] == "manual":
                pi["status"] = "requires_confirmation"
            else:
                self._authorize(pi, None)
            return self.render(pi)

    # -- Refunds ----------------------------------------------------------------------------------------------
    def refund_create(self, params: dict[str, Any], req: RequestInfo | None = None) -> dict[str, Any]:
        reject_unknown(
            params, {"payment_intent", "charge", "amount", "reason", "metadata", "expand", "instructions_email"}
        )
        reason = params.get("reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            raise invalid(
                "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer", param="reason"
            )
        with self.lock:
            if params.get("payment_intent"):
                pi = self._intent(params["payment_intent"], param="payment_intent")
                charge = self.charges.get(pi["latest_charge"] or "")
                if pi["status"] != "succeeded" or charge is None or charge["status"] != "succeeded":
                    raise ApiError(
                        400,
                        f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
                        code="charge_not_refundable",
                        param="payment_intent",
                    )
            elif params.get("charge"):
                charge = self.charges.get(params["charge"])
                if charge is None:
                    raise no_such("charge", params["charge"], param="charge")
            else:
                raise missing_param("payment_intent")
            # What was taken and not given back yet: a partial capture's released rest already counts in
            # ``amount_refunded`` (as Stripe shows it), so it is measured against the whole charge.
            remaining = charge["amount"] - charge["amount_refunded"]
            if remaining <= 0:
                raise ApiError(400, f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
            amount = parse_int(params.get("amount", remaining), "amount")
            if amount < 1:
                raise invalid("This value must be greater than or equal to 1.", param="amount")
            if amount > remaining:
                raise ApiError(
                    400,
                    f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
                    code="amount_too_large",
                    param="amount",
                )
            refund = {
                "id": new_id("re"),
                "object": "refund",
                "amount": amount,
                "balance_transaction": new_id("txn"),
                "charge": charge["id"],
                "created": int(self.now()),
                "currency": charge["currency"],
                "metadata": parse_metadata(params.get("metadata")),
                "payment_intent": charge["payment_intent"],
                "reason": reason,
                "receipt_number": None,
                "failure_reason": None,
                "source_transfer_reversal": None,
                "status": "succeeded",
                "transfer_reversal": None,
            }
            self.refunds[refund["id"]] = refund
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            charge["refunds"]["data"].insert(0, copy.deepcopy(refund))
            charge["refunds"]["total_count"] += 1
            self._emit("refund.created", refund, req)
            self._emit("charge.refunded", charge, req)
            return self.render(refund, params.get("expand"))

    def refund_settle(self, refund_id: str, status: str, failure_reason: str | None = None) -> dict[str, Any]:
        """Move a refund to ``status`` later, as the card network does: a pending refund succeeds, or one fails
        days after it was made (https://docs.stripe.com/refunds#failed-refunds). Only a pending or succeeded
        refund counts in the charge's ``amount_refunded``. Emits ``refund.updated``, ``charge.refund.updated``
        and, for a failure, ``refund.failed``."""
        if status not in _REFUND_STATUSES:
            raise invalid("Invalid status: must be one of " + ", ".join(_REFUND_STATUSES), param="status")
        with self.lock:
            refund = self.refunds.get(refund_id)
            if refund is None:
                raise no_such("refund", refund_id)
            if refund["status"] in ("failed", "canceled"):
                raise ApiError(400, f"Refund {refund_id} has already {refund['status']}.", code="refund_not_updatable")
            charge = self.charges[refund["charge"]]
            counted_before, counted_after = refund["status"] in _REFUND_COUNTED, status in _REFUND_COUNTED
            charge["amount_refunded"] += refund["amount"] * (counted_after - counted_before)
            charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"] > 0
            refund["status"] = status
            if status == "failed":
                refund["failure_reason"] = failure_reason or "expired_or_canceled_card"
            for listed in charge["refunds"]["data"]:
                if listed["id"] == refund_id:
                    listed.update(copy.deepcopy(refund))
            self._emit("refund.updated", refund, None)
            self._emit("charge.refund.updated", refund, None)
            if status == "failed":
                self._emit("refund.failed", refund, None)
            return self.render(refund)

    # -- internals --------------------------------------------------------------------------------------------
    def _cancel(self, pi: dict[str, Any], reason: str | None, req: RequestInfo | None) -> None:
        """``canceled``; an authorization's hold is released: its uncaptured charge shows as refunded."""
        if pi["status"] == "requires_capture" and pi["latest_charge"]:
            self._release(self.charges[pi["latest_charge"]])
        pi.update(
            status="canceled",
            canceled_at=int(self.now()),
            cancellation_reason=reason,
            amount_capturable=0,
            next_action=None,
        )
        self._emit("payment_intent.canceled", pi, req)

    @staticmethod
    def _release(charge: dict[str, Any]) -> dict[str, Any]:
        """The held amount goes back to the card: Stripe shows an uncaptured charge released as refunded."""
        charge["amount_refunded"] = charge["amount"]
        charge["refunded"] = True
        return charge

    def _confirm(self, pi: dict[str, Any], params: dict[str, Any], req: RequestInfo | None) -> None:
        if params.get("payment_method"):
            pi["payment_method"] = self._payment_method(params["payment_method"])["id"]
        if not pi["payment_method"]:
            raise unexpected_state(
                "You cannot confirm this PaymentIntent because it's missing a payment method. To confirm the "
                "PaymentIntent, specify a payment method with the `payment_method` parameter.",
                payment_intent=self.render(pi),
            )
        if "capture_method" in params and params["capture_method"] in ("automatic", "automatic_async", "manual"):
            pi["capture_method"] = params["capture_method"]
        pm = self.payment_methods[pi["payment_method"]]
        card = TEST_CARDS[pm["_test_card"]]
        pi["last_payment_error"] = None
        pi["next_action"] = None
        if req is not None and req.force_decline:
            card = GENERIC_DECLINE
        if card.outcome == "authenticate":
            if as_bool(params.get("off_session")):
                self._decline(pi, pm, card, req, code="authentication_required", decline_code="authentication_required",
                              message="Your card was declined. This transaction requires authentication.")  # fmt: skip
            pi["status"] = "requires_action"
            pi["next_action"] = _authentication_action(pi, params.get("return_url"), req)
            self._emit("payment_intent.requires_action", pi, req)
            return
        if card.outcome == "decline":
            self._decline(pi, pm, card, req, code=card.code or "card_declined", decline_code=card.decline_code,
                          message=card.message or "Your card was declined.")  # fmt: skip
        self._authorize(pi, req)

    def _new_charge(self, pi: dict[str, Any], pm: dict[str, Any], *, status: str) -> dict[str, Any]:
        charge_id = new_id("ch")
        charge = {
            "id": charge_id,
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": 0,
            "amount_refunded": 0,
            "balance_transaction": None,
            "captured": False,
            "created": int(self.now()),
            "currency": pi["currency"],
            "description": pi["description"],
            "disputed": False,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": copy.deepcopy(pi["metadata"]),
            "outcome": None,
            "paid": status == "succeeded",
            "payment_intent": pi["id"],
            "payment_method": pm["id"],
            "payment_method_details": {"card": copy.deepcopy(pm["card"]), "type": "card"},
            "receipt_email": pi["receipt_email"],
            "refunded": False,
            "refunds": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/charges/{charge_id}/refunds",
            },  # fmt: skip
            "status": status,
        }
        self.charges[charge_id] = charge
        pi["latest_charge"] = charge_id
        return charge

    def _decline(self, pi, pm, card: TestCard, req, *, code: str, decline_code: str | None, message: str) -> None:
        charge = self._new_charge(pi, pm, status="failed")
        charge.update(
            failure_code=code,
            failure_message=message,
            outcome={
                "network_status": "declined_by_network",
                "reason": decline_code,
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline.",
                "type": "issuer_declined",
            },  # fmt: skip
        )
        error = {
            "charge": charge["id"],
            "code": code,
            "decline_code": decline_code,
            "doc_url": "https://stripe.com/docs/error-codes/" + code.replace("_", "-"),
            "message": message,
            "payment_method": copy.deepcopy(public(pm)),
            "type": "card_error",
        }
        pi.update(status="requires_payment_method", payment_method=None, last_payment_error=error)
        self._emit("charge.failed", charge, req)
        self._emit("payment_intent.payment_failed", pi, req)
        raise ApiError(
            402,
            message,
            type="card_error",
            code=code,
            decline_code=decline_code,
            charge=charge["id"],
            payment_intent=self.render(pi),
            payment_method=public(pm),
        )

    def _authorize(self, pi: dict[str, Any], req: RequestInfo | None) -> None:
        pm = self.payment_methods[pi["payment_method"]]
        charge = self._new_charge(pi, pm, status="succeeded")
        charge["outcome"] = {"network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                             "seller_message": "Payment complete.", "type": "authorized"}  # fmt: skip
        charge["balance_transaction"] = new_id("txn")
        if pi["capture_method"] == "manual":
            pi.update(status="requires_capture", amount_capturable=pi["amount"])
            self._emit("charge.succeeded", charge, req)
            self._emit("payment_intent.amount_capturable_updated", pi, req)
            return
        charge.update(captured=True, amount_captured=pi["amount"])
        pi.update(status="succeeded", amount_received=pi["amount"])
        self._emit("charge.succeeded", charge, req)
        self._emit("payment_intent.succeeded", pi, req)


def _authentication_action(pi: dict[str, Any], return_url: str | None, req: RequestInfo | None) -> dict[str, Any]:
    """3-D Secure's ``next_action``, as Stripe answers a server-side confirm: with a ``return_url`` a redirect
    to the challenge page (stripe_emulator/challenge.py, on the address the caller used), which sends the buyer
    back there; without one, ``use_stripe_sdk`` for Stripe.js to handle."""
    if return_url is None:
        return {
            "type": "use_stripe_sdk",
            "use_stripe_sdk": {
                "type": "three_d_secure_redirect",
                "stripe_js": f"https://hooks.stripe.com/redirect/authenticate/{new_id('src')}",
                "source": new_id("src"),
            },
        }
    base = req.base_url if req is not None else ""
    return {
        "type": "redirect_to_url",
        "redirect_to_url": {"url": f"{base}/_emulator/3ds/{pi['id']}", "return_url": return_url},
    }
