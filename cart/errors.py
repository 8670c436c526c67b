"""The cart's domain errors (codes from cartflow/problems.py, one class per code).

An unknown product or too little stock is refused with the catalog's own errors,
``inventory.errors.ProductNotFound`` and ``InsufficientStock``.
"""

from __future__ import annotations

from cartflow.problems import DomainError


class AuthenticationFailed(DomainError):
    """Sign-in with an unknown username or a wrong password."""

    code = "authentication_failed"


class CartUnavailable(DomainError):
    code = "cart_unavailable"


class CartVersionConflict(DomainError):
    code = "cart_version_conflict"


class CurrencyMismatch(DomainError):
    code = "currency_mismatch"


class CartValidationError(DomainError):
    """A 400 ``validation_error`` for one field, in the same shape as DRF's (``errors: [...]``)."""

    code = "validation_error"

    def __init__(self, *, field: str, code: str, detail: str) -> None:
        super().__init__("The request has invalid fields.", errors=[{"field": field, "code": code, "detail": detail}])


class CartMissing(Exception):
    """Internal: a write named a guest cart that does not exist (unknown or expired token)."""
