"""Stripe-shaped API errors: ``{"error": {"type", "code", "decline_code", "message", "param", ...}}``."""

from __future__ import annotations

from typing import Any

DOC_URL = "https://stripe.com/docs/error-codes/"


class ApiError(Exception):
    """An error answered with Stripe's status code and body.

    ``store`` says whether an idempotent request that ended in this error keeps its result under the key:
    Stripe saves results once the endpoint started executing, not for parameter validation failures.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        store: bool = True,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.store = store
        self.headers = headers or {}
        self.error: dict[str, Any] = {"type": type, "message": message}
        if code:
            self.error["code"] = code
            self.error["doc_url"] = DOC_URL + code.replace("_", "-")
        if param:
            self.error["param"] = param
        if decline_code:
            self.error["decline_code"] = decline_code
        self.error.update({k: v for k, v in extra.items() if v is not None})

    def body(self) -> dict[str, Any]:
        return {"error": self.error}


def invalid(message: str, *, code: str | None = "parameter_invalid", param: str | None = None) -> ApiError:
    """A request that failed validation: nothing ran, nothing is stored under its idempotency key."""
    return ApiError(400, message, code=code, param=param, store=False)


def missing_param(param: str) -> ApiError:
    return ApiError(400, f"Missing required param: {param}.", code="parameter_missing", param=param, store=False)


def no_such(kind: str, object_id: str, *, param: str = "id") -> ApiError:
    return ApiError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param, store=False)


def unexpected_state(message: str, *, payment_intent: dict[str, Any] | None = None) -> ApiError:
    return ApiError(400, message, code="payment_intent_unexpected_state", payment_intent=payment_intent)
