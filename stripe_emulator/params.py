"""The parameter checks Stripe's API answers 400 for: unknown names, integers, amounts, currencies, metadata, URLs.

A failed check raises before anything ran, so nothing is stored under the request's idempotency key.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError, invalid, missing_param

# Stripe's minimum charge amounts for common currencies (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts).
_MINIMUM_AMOUNT = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "chf": 50, "jpy": 50}


def reject_unknown(params: dict[str, Any], allowed: set[str]) -> None:
    for key in params:
        if key not in allowed:
            raise invalid(f"Received unknown parameter: {key}", code="parameter_unknown", param=key)


def check_return_url(params: dict[str, Any]) -> None:
    """``return_url``, when given, is an absolute http(s) URL (where a redirect brings the buyer back)."""
    url = params.get("return_url")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise invalid("Invalid URL: return_url must be an absolute http(s) URL.", param="return_url")


def parse_int(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {value}", code="parameter_invalid_integer", param=param) from None


def parse_amount(params: dict[str, Any]) -> int:
    if params.get("amount") in (None, ""):
        raise missing_param("amount")
    amount = parse_int(params["amount"], "amount")
    if amount < 1:
        raise invalid("This value must be greater than or equal to 1.", param="amount")
    minimum = _MINIMUM_AMOUNT.get(str(params.get("currency", "")).lower())
    if minimum and amount < minimum:
        raise ApiError(
            400,
            f"Amount must be at least {minimum} {params['currency'].lower()} minor units",
            code="amount_too_small",
            param="amount",
            store=False,
        )
    return amount


def parse_currency(params: dict[str, Any]) -> str:
    currency = params.get("currency")
    if not currency:
        raise missing_param("currency")
    currency = str(currency).lower()
    if len(currency) != 3 or not currency.isalpha():
        raise invalid(f"Invalid currency: {currency}.", code="parameter_invalid", param="currency")
    return currency


def parse_metadata(value: Any) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid metadata: must be an object", param="metadata")
    return {str(k): str(v) for k, v in value.items() if v != ""}


def merge_metadata(current: dict[str, str], value: Any) -> dict[str, str]:
    """Stripe merges metadata on update; an empty value deletes a key, ``metadata=""`` clears it."""
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid metadata: must be an object", param="metadata")
    merged = dict(current)
    for k, v in value.items():
        if v == "":
            merged.pop(k, None)
        else:
            merged[str(k)] = str(v)
    return merged
