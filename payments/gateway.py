"""The Stripe gateway: the only module that calls Stripe's API (docs/architecture.md, "Dependency rules").

Every write carries an idempotency key derived from the order (and the attempt), so a retry after a
timeout or a lost response repeats the same request and Stripe performs it once. stripe-python's own
network retries reuse that key. Results come back as :class:`~payments.interface.IntentResult` /
:class:`~payments.interface.RefundResult`; a card decline is a result, not an exception. Errors whose
outcome is unknown raise :class:`~payments.errors.PaymentTransientError` (retry later with the same key);
bugs raise :class:`~payments.errors.PaymentPermanentError`.

Two rules hold for every call, each written once: every HTTP request spends the shared Stripe budget and a
429 is sent again with the same key (:class:`_BudgetedHTTPClient`, under stripe-python), and every write
runs outside any database transaction and is recorded on the order's ``Payment`` row (a ``PaymentAttempt``)
in its own short transaction after the network call, whatever its end (:func:`_stripe_write`). Each
request is also timed there, and each operation (the retrieve too) counted with its outcome
(payments/metrics.py).
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Concatenate, ParamSpec, TypeVar

import stripe
import structlog
from django.conf import settings
from django.db import connection
from prometheus_client import Counter

from payments import budget
from payments import metrics as stripe_metrics
from payments.errors import PaymentMethodInvalid, PaymentPermanentError, PaymentProviderBusy, PaymentTransientError
from payments.interface import IntentResult, RefundResult, intent_result, refund_result
from payments.services import payment_attempt_record

log = structlog.get_logger("cartflow.payments")

DEV_API_KEY = "sk_test_cartflow_emulator"


# --- the one door to Stripe: every HTTP request spends the shared budget; a 429 is retried here ---

RATE_LIMIT_RETRIES = 3  # after this many 429s in a row: PaymentProviderBusy (nothing happened at Stripe)
RATE_LIMIT_BACKOFF_SECONDS = (0.25, 2.0)  # first backoff and cap; doubled each time, jittered to 50-100 %


class _BudgetedHTTPClient(stripe.RequestsClient):
    """stripe-python's HTTP client with the budget (payments/budget.py) in front of each request it sends.

    Every request, stripe-python's own retries included, first spends one token; no token within the wait
    raises PaymentProviderBusy before the request leaves. A 429 (Stripe's rate limiter: the request was not
    performed) is sent again here, the same request with the same idempotency key, after a jittered
    exponential backoff, at most ``RATE_LIMIT_RETRIES`` times, then PaymentProviderBusy. stripe-python's
    loop retries connection errors, 409 and 5xx but a 429 only when Stripe adds ``Stripe-Should-Retry: true``
    (``_should_retry`` in stripe/_http_client.py); it never sees a 429 that this loop is still retrying.

    Once a request of the same call went out and got no definite answer (a connection error, a 5xx that
    stripe-python retries), the outcome is unknown: running out of budget or of 429 retries then ends as a
    connection error (PaymentTransientError), never as PaymentProviderBusy, which promises nothing happened.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._call = threading.local()

    def request_with_retries(self, *args: Any, **kwargs: Any) -> Any:
        self._call.unsure = False  # a new call: nothing of it has reached Stripe yet
        return super().request_with_retries(*args, **kwargs)

    def request(self, method: str, url: str, headers: Any, post_data: Any = None) -> Any:
        for retry in range(RATE_LIMIT_RETRIES + 1):
            try:
                budget.spend()
            except PaymentProviderBusy as exc:
                if getattr(self._call, "unsure", False):
                    raise stripe.APIConnectionError(f"{exc.detail} (after an unanswered request)") from exc
                raise
            try:
                with stripe_metrics.stripe_request_timed():
                    response = super().request(method, url, headers, post_data)
            except stripe.APIConnectionError:
                self._call.unsure = True
                raise
            if response[1] != 429:
                self._call.unsure = response[1] >= 500 or response[1] == 409
                return response
            _RATE_LIMITED.inc()
            if retry < RATE_LIMIT_RETRIES:
                first, cap = RATE_LIMIT_BACKOFF_SECONDS
                time.sleep(min(cap, first * 2**retry) * random.uniform(0.5, 1.0))
        if getattr(self._call, "unsure", False):
            return response  # stripe-python raises RateLimitError: PaymentTransientError, outcome unknown
        log.warning("stripe_rate_limited", url=url, attempts=RATE_LIMIT_RETRIES + 1)
        raise PaymentProviderBusy("Stripe kept answering 429 (rate limit) and performed none of these requests.")


_RATE_LIMITED = Counter("cartflow_stripe_rate_limited_total", "429 answers from Stripe (each one retried or busy).")


# --- the client: built lazily, once per process and configuration ---

_clients: dict[tuple, stripe.StripeClient] = {}
_clients_lock = threading.Lock()


def _client() -> stripe.StripeClient:
    config = (
        settings.STRIPE_SECRET_KEY or DEV_API_KEY,
        settings.STRIPE_API_BASE,
        settings.STRIPE_MAX_NETWORK_RETRIES,
        settings.STRIPE_TIMEOUT_SECONDS,
    )
    client = _clients.get(config)
    if client is None:
        with _clients_lock:
            client = _clients.get(config)
            if client is None:
                api_key, api_base, retries, timeout = config
                client = stripe.StripeClient(
                    api_key,
                    base_addresses={"api": api_base} if api_base else None,
                    max_network_retries=retries,
                    http_client=_BudgetedHTTPClient(timeout=timeout),
                )
                _clients[config] = client
    return client


# --- error mapping ---

_TRANSIENT_CODES = {"lock_timeout", "idempotency_key_in_use", "rate_limit"}


def _code(exc: stripe.StripeError) -> str | None:
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None) or exc.code
    if code is None and isinstance(exc, stripe.IdempotencyError):
        code = "idempotency_error"  # same key, other parameters: Stripe gives a type, not a code
    return code


def _classify(exc: stripe.StripeError) -> Exception:
    """Map a Stripe error that is not a decline nor a state race to our transient/permanent errors."""
    code = _code(exc)
    status = exc.http_status or 0
    message = exc.user_message or str(exc) or exc.__class__.__name__
    transient = (
        isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError)
        or code in _TRANSIENT_CODES
        or status == 409
        or status >= 500
    )
    if transient:
        err = PaymentTransientError(f"Stripe unavailable: {message}")
        err.stripe_code = code or exc.__class__.__name__
        return err
    return PaymentPermanentError(f"Stripe refused the request ({code or status}): {message}", stripe_code=code)


def _assert_no_transaction() -> None:
    if connection.in_atomic_block:
        # A Stripe call inside a transaction holds locks across the network (docs/checkout-saga.md,
        # "Guarantees"). A bug, not a state.
        raise RuntimeError("Stripe must not be called inside a database transaction")


def _retrieve(intent_id: str) -> IntentResult:
    pi = _client().v1.payment_intents.retrieve(intent_id, params={"expand": ["latest_charge"]})
    return intent_result(pi)


# --- the rule every write obeys: outside a transaction, under its key, recorded whatever its end ---

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class _Call:
    """One write to Stripe for an order: its idempotency key and what its PaymentAttempt records."""

    order_id: str
    operation: str
    key: str
    checkout_id: str = ""
    amount: int = 0
    currency: str = ""
    # What the call learnt about the PaymentIntent when its result is something else (a refund).
    intent: IntentResult | None = None

    def record(self, *, intent: IntentResult | None = None, error: Exception | None = None) -> None:
        payment_attempt_record(
            order_id=self.order_id,
            operation=self.operation,
            idempotency_key=self.key,
            intent=intent,
            error=error,
            checkout_id=self.checkout_id,
            amount=self.amount,
            currency=self.currency,
        )


def _stripe_write(
    operation: str, *, key: str | Callable[..., str], creates: bool = False
) -> Callable[[Callable[Concatenate[_Call, P], R]], Callable[P, R]]:
    """Run the decorated write the way every write to Stripe runs.

    Never inside a database transaction (RuntimeError: a bug). The body gets its :class:`_Call`, whose
    idempotency key is ``key`` formatted with (or, a function, called with) the call's keyword arguments, so
    a retry repeats the same request.
    After it, the attempt is recorded whatever the end: the PaymentIntent returned (or ``call.intent``); a
    refused payment method (:class:`PaymentMethodInvalid`, with the intent it still created, if any); or a
    Stripe error, which leaves as ours (:func:`_classify`). A write that ``creates`` the PaymentIntent
    records the order's checkout, amount and currency too, so the Payment row has them even when Stripe's
    answer is lost. Each write is counted by operation and outcome (payments/metrics.py).
    """

    def decorate(fn: Callable[Concatenate[_Call, P], R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            _assert_no_transaction()
            given: dict[str, Any] = kwargs
            call_key = key(**given) if callable(key) else key.format(**given)
            call = _Call(order_id=given["order_id"], operation=operation, key=call_key)
            if creates:
                call.checkout_id, call.amount = given["checkout_id"], given["amount"]
                call.currency = given["currency"].lower()
            try:
                result = fn(call, *args, **kwargs)
            except stripe.StripeError as exc:
                err = _classify(exc)
                call.record(error=err)
                raise err from exc
            except PaymentMethodInvalid as err:
                if err.intent is not None:
                    call.record(intent=err.intent)
                else:
                    call.record(error=err)
                raise
            call.record(intent=result if isinstance(result, IntentResult) else call.intent)
            return result

        return stripe_metrics.stripe_operation(operation)(run)

    return decorate


# --- the operations ---


def _intent_params(*, order_id: str, checkout_id: str, amount: int, currency: str, email: str | None) -> dict[str, Any]:
    """What every PaymentIntent of an order is created with: card only, metadata linking it back to the order,
    and with ``CARTFLOW_CAPTURE_METHOD=manual`` an authorization only (the order's fulfilment captures it)."""
    params: dict[str, Any] = {
        "amount": amount,
        "currency": currency.lower(),
        "payment_method_types": ["card"],
        "metadata": {"order_id": order_id, "checkout_id": checkout_id},
    }
    if settings.CARTFLOW_CAPTURE_METHOD == "manual":
        params["capture_method"] = "manual"
    if email:
        params["receipt_email"] = email
    return params


@_stripe_write("create", key="cf:{order_id}:pi-create", creates=True)
def payment_intent_create(
    call: _Call, *, order_id: str, checkout_id: str, amount: int, currency: str, email: str | None = None
) -> IntentResult:
    """The one PaymentIntent of an order: card only, metadata links it back to the order and the checkout."""
    params = _intent_params(order_id=order_id, checkout_id=checkout_id, amount=amount, currency=currency, email=email)
    return intent_result(_client().v1.payment_intents.create(params=params, options={"idempotency_key": call.key}))


@_stripe_write("create_confirm", key="cf:{order_id}:pi-create-confirm:{attempt}", creates=True)
def payment_intent_create_and_confirm(
    call: _Call,
    *,
    order_id: str,
    checkout_id: str,
    amount: int,
    currency: str,
    attempt: int,
    payment_method: str | None = None,
    confirmation_token: str | None = None,
    return_url: str | None = None,
    email: str | None = None,
) -> IntentResult:
    """Create the order's one PaymentIntent and confirm it, in ONE Stripe call (the deferred-intent flow).

    Keyed by the order and the attempt: replaying the same call with the same key (after a timeout or a
    lost response) returns the intent the first call created, never a second one. ``return_url``: where a
    redirect (3-D Secure's challenge page) sends the buyer back. A decline comes back as
    a result (the intent exists, ``requires_payment_method``); a payment method or confirmation token that
    Stripe refuses raises :class:`PaymentMethodInvalid` (no intent is created for it).
    """
    params = {
        **_intent_params(order_id=order_id, checkout_id=checkout_id, amount=amount, currency=currency, email=email),
        "confirm": True,
        **_method_params(payment_method, confirmation_token, return_url),
    }
    try:
        return intent_result(_client().v1.payment_intents.create(params=params, options={"idempotency_key": call.key}))
    except stripe.CardError as exc:
        embedded = getattr(exc.error, "payment_intent", None)
        if not embedded:
            raise
        return _declined(intent_result(embedded), exc)
    except stripe.InvalidRequestError as exc:
        if _method_refused(exc):
            raise _method_invalid(exc) from exc
        embedded = getattr(exc.error, "payment_intent", None)
        if not embedded or _code(exc) != "payment_intent_unexpected_state":
            raise
        # Created, but the confirm could not use what was sent: the intent is the answer.
        err = PaymentMethodInvalid(exc.user_message or str(exc))
        err.intent = intent_result(embedded)
        raise err from exc


@_stripe_write("confirm", key="cf:{order_id}:confirm:{attempt}")
def payment_intent_confirm(
    call: _Call,
    *,
    order_id: str,
    intent_id: str,
    attempt: int,
    payment_method: str | None = None,
    confirmation_token: str | None = None,
    return_url: str | None = None,
) -> IntentResult:
    """Confirm the order's existing PaymentIntent (a later attempt, or after ``/payment-intent``).

    A decline comes back as a result with ``decline_code``/``error_code``; a refused payment method or
    confirmation token raises :class:`PaymentMethodInvalid` (the intent is left as it was)."""
    params = _method_params(payment_method, confirmation_token, return_url)
    try:
        pi = _client().v1.payment_intents.confirm(intent_id, params=params, options={"idempotency_key": call.key})
        return intent_result(pi)
    except stripe.CardError as exc:
        return _declined(_retrieve(intent_id), exc)  # the re-read PaymentIntent is the real answer
    except stripe.InvalidRequestError as exc:
        if _method_refused(exc):
            raise _method_invalid(exc) from exc
        if _code(exc) != "payment_intent_unexpected_state":
            raise
        # Already succeeded (an earlier attempt went through) or canceled: the real state is the answer.
        return _retrieve(intent_id)


@stripe_metrics.stripe_operation("retrieve")
def payment_intent_retrieve(*, intent_id: str) -> IntentResult:
    """The PaymentIntent as Stripe has it now (with its latest charge's refunds and dispute flag).

    A read: outside a transaction like every call, but recorded on no order."""
    _assert_no_transaction()
    try:
        return _retrieve(intent_id)
    except stripe.StripeError as exc:
        raise _classify(exc) from exc


@_stripe_write("cancel", key="cf:{order_id}:cancel")
def payment_intent_cancel(call: _Call, *, order_id: str, intent_id: str) -> IntentResult:
    """Cancel; already canceled → that state; succeeded (cannot cancel) → the succeeded PI (caller refunds)."""
    try:
        return intent_result(_client().v1.payment_intents.cancel(intent_id, options={"idempotency_key": call.key}))
    except stripe.InvalidRequestError as exc:
        if _code(exc) != "payment_intent_unexpected_state":
            raise
        return _retrieve(intent_id)  # a state race: the re-read PaymentIntent is the real answer


@_stripe_write("capture", key="cf:{order_id}:capture")
def payment_intent_capture(call: _Call, *, order_id: str, intent_id: str, amount: int | None = None) -> IntentResult:
    """Take the money an authorization holds (``requires_capture``): all of it, or ``amount``. One key per
    order: a replay after a lost answer returns the capture Stripe made, never a second one. Nothing left to
    capture (captured already, voided, or the authorization expired at Stripe) → the PaymentIntent as it is:
    ``succeeded`` or ``canceled``, for the caller to read."""
    params: dict[str, Any] = {} if amount is None else {"amount_to_capture": amount}
    try:
        pi = _client().v1.payment_intents.capture(intent_id, params=params, options={"idempotency_key": call.key})
        return intent_result(pi)
    except stripe.InvalidRequestError as exc:
        if _code(exc) != "payment_intent_unexpected_state":
            raise
        return _retrieve(intent_id)  # the re-read PaymentIntent is the real answer


def refund_key(*, order_id: str, seq: int | None = None, **_: Any) -> str:
    """``cf:<order>:refund`` for the one full refund of a compensation or a reconciliation;
    ``cf:<order>:refund:<seq>`` for a numbered refund (payments/refunds.py)."""
    return f"cf:{order_id}:refund" if seq is None else f"cf:{order_id}:refund:{seq}"


@_stripe_write("refund", key=refund_key)
def refund_create(
    call: _Call, *, order_id: str, intent_id: str, amount: int | None = None, seq: int | None = None
) -> RefundResult:
    """Refund the order's charge: all of what is left by default, or ``amount``.

    Without ``seq``: the order's one full refund; already fully refunded → the existing refund. With
    ``seq``: refund number ``seq`` of the order, keyed by it and carrying it in ``metadata.refund_seq``, so
    a replay after a lost answer is answered with the refund Stripe made, and a webhook can tell which of
    ours it is; a charge already refunded is then a refusal (PaymentPermanentError), not "the existing one".
    """
    params: dict[str, Any] = {"payment_intent": intent_id}
    if amount is not None:
        params["amount"] = amount
    if seq is not None:
        params["metadata"] = {"order_id": order_id, "refund_seq": str(seq)}
    try:
        refund = _client().v1.refunds.create(params=params, options={"idempotency_key": call.key})
    except stripe.InvalidRequestError as exc:
        if seq is not None or _code(exc) != "charge_already_refunded":
            raise
        refund = _existing_refund(intent_id, exc)
    result = refund_result(refund)
    try:
        call.intent = _retrieve(intent_id)  # recorded with the attempt: the refunded amount as Stripe has it
    except stripe.StripeError:
        pass  # the refund happened; the next sync (webhook charge.refunded, reconcile) records it
    return result


def refund_retrieve(*, refund_id: str) -> RefundResult:
    """The refund as Stripe has it now (a read, recorded on no order)."""
    _assert_no_transaction()
    try:
        return refund_result(_client().v1.refunds.retrieve(refund_id))
    except stripe.StripeError as exc:
        raise _classify(exc) from exc


# --- helpers for the error paths ---

# The parameters through which a confirm names what pays: Stripe's errors about them carry ``param``.
_METHOD_PARAMS = ("payment_method", "confirmation_token", "payment_method_data")


def _method_params(
    payment_method: str | None, confirmation_token: str | None, return_url: str | None = None
) -> dict[str, str]:
    if bool(payment_method) == bool(confirmation_token):
        raise ValueError("exactly one of payment_method and confirmation_token")
    params = {"confirmation_token": confirmation_token} if confirmation_token else {"payment_method": payment_method}
    if return_url:
        params["return_url"] = return_url  # with it, 3-D Secure answers next_action redirect_to_url
    return params


def _method_refused(exc: stripe.InvalidRequestError) -> bool:
    """Stripe refused the payment method or token itself (unknown, detached, unusable): a client error.

    Stripe answers ``resource_missing`` (404) for an unknown one, other codes for unusable ones, always
    with ``param`` naming the method's parameter."""
    param = getattr(getattr(exc, "error", None), "param", None) or getattr(exc, "param", None) or ""
    return any(param == name or param.startswith(name + "[") for name in _METHOD_PARAMS)


def _method_invalid(exc: stripe.StripeError) -> PaymentMethodInvalid:
    return PaymentMethodInvalid(exc.user_message or str(exc) or "The payment method cannot be used.")


def _declined(intent: IntentResult, exc: stripe.CardError) -> IntentResult:
    err = exc.error
    return replace(
        intent,
        decline_code=getattr(err, "decline_code", None) or intent.decline_code,
        error_code=_code(exc) or intent.error_code or "card_declined",
        error_message=getattr(err, "message", None) or intent.error_message,
    )


def _existing_refund(intent_id: str, exc: stripe.StripeError) -> Any:
    """The refund that already emptied the charge (ours, or one made in the dashboard); else ``exc`` again."""
    refunds = _client().v1.refunds.list(params={"payment_intent": intent_id, "limit": 10})
    succeeded = [r for r in refunds.data if r.status in ("succeeded", "pending")]
    if not succeeded:
        raise exc
    return succeeded[0]
