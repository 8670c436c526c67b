"""payments/gateway.py through the real ``stripe`` client against the emulator (and localstripe where it can).

Gateway calls refuse to run inside a transaction, so these tests are ``transaction=True``.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import stripe
from django.db import connection, transaction

from payments.errors import PaymentMethodInvalid, PaymentPermanentError, PaymentTransientError
from payments.gateway import (
    payment_intent_cancel,
    payment_intent_confirm,
    payment_intent_create,
    payment_intent_create_and_confirm,
    payment_intent_retrieve,
    refund_create,
)
from payments.models import Payment, PaymentAttempt
from payments.selectors import payment_get

pytestmark = pytest.mark.django_db(transaction=True)
CONFIRM = "POST /v1/payment_intents/*/confirm"
CARD_4242 = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def _order() -> str:
    return f"ord_{uuid.uuid4().hex[:12]}"


def _confirm(order_id: str, intent_id: str, payment_method: str, attempt: int):
    return payment_intent_confirm(
        order_id=order_id, intent_id=intent_id, payment_method=payment_method, attempt=attempt
    )


def _wait_until_fired(emulator) -> None:  # noqa: ANN001
    """The emulator consumed the fault: the request it was meant for has arrived and holds its key."""
    deadline = time.monotonic() + 30
    while emulator.faults():
        assert time.monotonic() < deadline, "the request never reached the emulator"
        time.sleep(0.01)


def _charges(emulator) -> int:
    return len(emulator.events("charge.succeeded"))


@pytest.fixture(params=["emulator", "localstripe"])
def backend(request, settings):
    """The gateway pointed at our emulator or at the third-party localstripe."""
    if request.param == "emulator":
        emulator = request.getfixturevalue("stripe_emulator")
        return "emulator", emulator
    settings.STRIPE_API_BASE = request.getfixturevalue("localstripe_server")
    settings.STRIPE_MAX_NETWORK_RETRIES = 0  # its 500s are "not implemented", not worth retrying
    return "localstripe", None


@pytest.fixture
def emulator(stripe_emulator, settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 2
    return stripe_emulator


def _paid_intent(backend_name: str, emulator, order_id: str, amount: int = 2500) -> str:
    """A succeeded PaymentIntent for ``order_id``, made the way each backend can."""
    intent = payment_intent_create(order_id=order_id, checkout_id="chk_1", amount=amount, currency="usd")
    if backend_name == "emulator":
        _confirm(order_id, intent.intent_id, "pm_card_visa", 1)
        return intent.intent_id
    # localstripe: confirm takes no payment_method (it answers 500 "Not implemented"), so the test sets one up
    # with its own client and confirms it there; the gateway's refund/retrieve/cancel are what is under test.
    from django.conf import settings

    client = stripe.StripeClient("sk_test_cartflow", base_addresses={"api": settings.STRIPE_API_BASE})
    pm = client.v1.payment_methods.create(params={"type": "card", "card": CARD_4242})
    pi = client.v1.payment_intents.create(
        params={"amount": amount, "currency": "usd", "payment_method": pm.id, "metadata": {"order_id": order_id}}
    )
    client.v1.payment_intents.confirm(pi.id)
    return pi.id


# --- create ---


def test_create_makes_one_card_only_intent_per_order_with_its_metadata(backend):
    name, emulator = backend
    order_id = _order()
    first = payment_intent_create(order_id=order_id, checkout_id="chk_a", amount=1999, currency="USD")
    if emulator is not None:  # localstripe does not implement idempotency keys
        again = payment_intent_create(order_id=order_id, checkout_id="chk_a", amount=1999, currency="USD")
        assert again.intent_id == first.intent_id  # same idempotency key → the same PaymentIntent
    assert (first.status, first.amount, first.currency) == ("requires_payment_method", 1999, "usd")
    assert first.metadata == {"order_id": order_id, "checkout_id": "chk_a"}
    assert first.client_secret and first.client_secret.startswith(first.intent_id)
    retrieved = payment_intent_retrieve(intent_id=first.intent_id)
    assert retrieved.metadata["order_id"] == order_id
    payment = payment_get(order_id=order_id)
    assert (payment.intent_id, payment.status, payment.amount, payment.checkout_id) == (
        first.intent_id,
        "requires_payment_method",
        1999,
        "chk_a",
    )
    assert list(payment.attempts.values_list("operation", "idempotency_key", "outcome")) == [
        ("create", f"cf:{order_id}:pi-create", "ok")
    ] * (2 if emulator is not None else 1)
    if emulator is not None:
        created = emulator.events("payment_intent.created")
        assert len(created) == 1
        assert created[0]["data"]["object"]["payment_method_types"] == ["card"]


def test_create_with_the_same_order_but_other_parameters_is_refused_as_a_bug(emulator):
    """Stripe answers 400 idempotency_error; the gateway raises PaymentPermanentError (it is our bug)."""
    order_id = _order()
    payment_intent_create(order_id=order_id, checkout_id="chk", amount=1000, currency="usd")
    with pytest.raises(PaymentPermanentError) as excinfo:
        payment_intent_create(order_id=order_id, checkout_id="chk", amount=2000, currency="usd")
    assert excinfo.value.stripe_code == "idempotency_error"
    assert emulator.control("GET", "/_emulator/health")["payment_intents"] == 1
    assert PaymentAttempt.objects.filter(payment__order_id=order_id, outcome="permanent").count() == 1


def test_create_when_stripe_keeps_failing_is_transient_and_recorded(emulator):
    emulator.add_fault("POST /v1/payment_intents", "http_500", times=3)  # the first call and both retries
    order_id = _order()
    with pytest.raises(PaymentTransientError) as excinfo:
        payment_intent_create(order_id=order_id, checkout_id="chk", amount=1000, currency="usd")
    assert excinfo.value.code == "payment_provider_unavailable" and excinfo.value.retry_after == 2
    payment = payment_get(order_id=order_id)
    assert payment.intent_id is None and payment.amount == 1000
    assert list(payment.attempts.values_list("outcome", flat=True)) == ["transient"]
    # Retrying later with the same key creates it (the 500s happened before the operation: nothing stored).
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=1000, currency="usd")
    assert payment_get(order_id=order_id).intent_id == intent.intent_id


def test_no_stripe_call_inside_a_transaction(emulator):
    with pytest.raises(RuntimeError, match="inside a database transaction"), transaction.atomic():
        payment_intent_create(order_id=_order(), checkout_id="chk", amount=1000, currency="usd")
    assert emulator.control("GET", "/_emulator/health")["payment_intents"] == 0


# --- confirm ---


# localstripe's confirm takes no payment_method (it answers 500 "Not implemented") and the gateway always
# sends one, so the gateway's confirm runs against our emulator only; localstripe still covers create,
# retrieve, cancel and refund (its intents are confirmed with its own client in _paid_intent).


def test_confirm_succeeds_and_records_it(emulator):
    order_id = _order()
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=4200, currency="eur")
    result = _confirm(order_id, intent.intent_id, "pm_card_visa", 1)
    assert result.succeeded and not result.declined and result.amount == 4200
    assert payment_get(order_id=order_id).status == "succeeded"
    assert _charges(emulator) == 1


@pytest.mark.parametrize(
    ("fault", "extra"),
    [("http_500", {}), ("timeout", {"ms": 200}), ("lose_response", {})],
)
def test_a_confirm_retried_after_a_fault_charges_once(emulator, fault, extra):
    """stripe-python's own retries reuse the idempotency key: Stripe performs the confirm once."""
    order_id = _order()
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=1500, currency="usd")
    emulator.add_fault(CONFIRM, fault, times=1, **extra)
    result = payment_intent_confirm(
        order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=1
    )
    assert result.succeeded
    assert _charges(emulator) == 1
    assert emulator.faults() == []  # the fault did fire


@pytest.mark.parametrize("fault", ["http_500", "timeout", "lose_response"])
def test_when_retries_run_out_the_outcome_is_unknown_and_a_later_retry_charges_once(emulator, settings, fault):
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    order_id = _order()
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=1500, currency="usd")
    emulator.add_fault(CONFIRM, fault, times=1, **({"ms": 100} if fault == "timeout" else {}))
    with pytest.raises(PaymentTransientError):
        _confirm(order_id, intent.intent_id, "pm_card_visa", 1)
    # lose_response did charge; http_500/timeout did not: either way the retry with the same key settles it.
    assert _charges(emulator) == (1 if fault == "lose_response" else 0)
    result = payment_intent_confirm(
        order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=1
    )
    assert result.succeeded
    assert _charges(emulator) == 1
    outcomes = list(payment_get(order_id=order_id).attempts.values_list("operation", "outcome"))
    assert outcomes == [("create", "ok"), ("confirm", "transient"), ("confirm", "ok")]


def test_a_concurrent_duplicate_confirm_is_transient_not_a_second_charge(emulator, settings):
    """The same key while the first request still runs → 409 idempotency_key_in_use → PaymentTransientError."""
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    order_id = _order()
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=1500, currency="usd")
    emulator.add_fault(CONFIRM, "latency", times=1, ms=800)
    results: list = []

    def first() -> None:
        try:
            results.append(
                payment_intent_confirm(
                    order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=1
                )
            )
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        _wait_until_fired(emulator)  # the first confirm holds the key now
        with pytest.raises(PaymentTransientError) as excinfo:
            payment_intent_confirm(
                order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=1
            )
        assert excinfo.value.stripe_code == "idempotency_key_in_use"
    finally:
        thread.join(10)
    assert results and results[0].succeeded
    assert _charges(emulator) == 1


@pytest.mark.parametrize(
    ("payment_method", "decline_code"),
    [
        ("pm_card_visa_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_visa_chargeDeclinedLostCard", "lost_card"),
    ],
)
def test_a_decline_is_a_result_with_its_codes_not_an_exception(emulator, payment_method, decline_code):
    order_id = _order()
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=1500, currency="usd")
    result = payment_intent_confirm(
        order_id=order_id, intent_id=intent.intent_id, payment_method=payment_method, attempt=1
    )
    assert result.declined and not result.succeeded
    assert (result.status, result.decline_code, result.error_code) == (
        "requires_payment_method",
        decline_code,
        "card_declined",
    )
    assert result.error_message
    attempt = PaymentAttempt.objects.get(payment__order_id=order_id, operation="confirm")
    assert (attempt.outcome, attempt.error_code) == ("declined", decline_code)
    # The buyer tries another card: attempt 2 has its own key and succeeds.
    again = payment_intent_confirm(
        order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=2
    )
    assert again.succeeded and again.decline_code is None
    assert _charges(emulator) == 1


def test_a_retried_declined_attempt_replays_the_decline_and_other_parameters_under_its_key_are_refused(emulator):
    order_id = _order()
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=1500, currency="usd")
    declined = "pm_card_visa_chargeDeclined"
    first = _confirm(order_id, intent.intent_id, declined, 1)
    replay = _confirm(order_id, intent.intent_id, declined, 1)
    assert first.decline_code == replay.decline_code == "generic_decline"
    with pytest.raises(PaymentPermanentError):
        _confirm(order_id, intent.intent_id, "pm_card_visa", 1)
    assert _charges(emulator) == 0


def test_three_d_secure_requires_action_with_next_action(emulator):
    order_id = _order()
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=1500, currency="usd")
    result = payment_intent_confirm(
        order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_threeDSecure2Required", attempt=1
    )
    assert result.requires_action and result.next_action and result.client_secret
    assert payment_get(order_id=order_id).status == "requires_action"
    emulator.authenticate(intent.intent_id, "succeed")
    assert payment_intent_retrieve(intent_id=intent.intent_id).succeeded


def test_confirming_an_already_succeeded_intent_returns_it(emulator):
    order_id = _order()
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=1500, currency="usd")
    _confirm(order_id, intent.intent_id, "pm_card_visa", 1)
    again = payment_intent_confirm(
        order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=2
    )
    assert again.succeeded and not again.declined
    assert _charges(emulator) == 1


def test_an_unknown_intent_is_a_permanent_error(backend):
    with pytest.raises(PaymentPermanentError):
        payment_intent_retrieve(intent_id="pi_doesnotexist")


def test_an_invalid_api_key_is_a_permanent_error(emulator, settings):
    settings.STRIPE_SECRET_KEY = "not-a-key"
    with pytest.raises(PaymentPermanentError):
        payment_intent_create(order_id=_order(), checkout_id="chk", amount=1000, currency="usd")


# --- cancel ---


def test_cancel_is_safe_to_repeat(backend):
    order_id = _order()
    intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=1500, currency="usd")
    assert payment_intent_cancel(order_id=order_id, intent_id=intent.intent_id).canceled
    assert payment_get(order_id=order_id).status == "canceled"
    if backend[0] == "emulator":  # localstripe answers a repeated cancel with a bare 400, no error code
        assert payment_intent_cancel(order_id=order_id, intent_id=intent.intent_id).canceled


def test_cancel_of_a_succeeded_intent_returns_it_succeeded_for_the_caller_to_refund(emulator):
    """Emulator only: localstripe answers this cancel with a bare 400 without payment_intent_unexpected_state."""
    order_id = _order()
    intent_id = _paid_intent("emulator", emulator, order_id)
    result = payment_intent_cancel(order_id=order_id, intent_id=intent_id)
    assert result.succeeded and not result.canceled


# --- refund ---


def test_refund_refunds_once(backend):
    name, emulator = backend
    order_id = _order()
    intent_id = _paid_intent(name, emulator, order_id, amount=2500)
    refund = refund_create(order_id=order_id, intent_id=intent_id)
    assert (refund.status, refund.amount) == ("succeeded", 2500)
    if emulator is not None:  # localstripe implements neither idempotency keys nor charge_already_refunded
        again = refund_create(order_id=order_id, intent_id=intent_id)
        assert again.refund_id == refund.refund_id
    assert payment_intent_retrieve(intent_id=intent_id).amount_refunded == 2500
    assert payment_get(order_id=order_id).amount_refunded == 2500
    if emulator is not None:
        assert emulator.control("GET", "/_emulator/health")["refunds"] == 1


def test_refunding_a_charge_refunded_elsewhere_returns_the_existing_refund(emulator):
    order_id = _order()
    intent_id = _paid_intent("emulator", emulator, order_id, amount=2500)
    direct = emulator.client().v1.refunds.create(params={"payment_intent": intent_id})
    refund = refund_create(order_id=order_id, intent_id=intent_id)
    assert refund.refund_id == direct.id and refund.amount == 2500
    assert emulator.control("GET", "/_emulator/health")["refunds"] == 1


def test_payment_rows_are_one_per_order(emulator):
    order_id = _order()
    for _ in range(3):
        payment_intent_create(order_id=order_id, checkout_id="chk", amount=1000, currency="usd")
    assert Payment.objects.filter(order_id=order_id).count() == 1


# --- create and confirm in one call (the deferred-intent flow) ---


def _create_and_confirm(order_id: str, attempt: int = 1, **method: str):
    return payment_intent_create_and_confirm(
        order_id=order_id, checkout_id="chk_d", amount=1500, currency="usd", attempt=attempt, **method
    )


def _intents_of(emulator, order_id: str) -> list[str]:
    with emulator.server.state.lock:
        intents = emulator.server.state.payment_intents.values()
        return [pi["id"] for pi in intents if pi["metadata"].get("order_id") == order_id]


def test_create_and_confirm_is_one_call_and_a_replay_returns_the_same_intent(emulator, settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    order_id = _order()
    emulator.add_fault("POST /v1/payment_intents", "lose_response")
    with pytest.raises(PaymentTransientError):
        _create_and_confirm(order_id, payment_method="pm_card_visa")
    assert len(_intents_of(emulator, order_id)) == 1  # Stripe made and charged it; the answer was lost
    again = _create_and_confirm(order_id, payment_method="pm_card_visa")  # same order + attempt → same key
    assert again.succeeded and _intents_of(emulator, order_id) == [again.intent_id]
    assert again.metadata == {"order_id": order_id, "checkout_id": "chk_d"} and again.client_secret
    assert _charges(emulator) == 1
    keys = set(PaymentAttempt.objects.values_list("idempotency_key", flat=True))
    assert keys == {f"cf:{order_id}:pi-create-confirm:1"}


def test_create_and_confirm_decline_is_a_result_carrying_the_intent(emulator):
    order_id = _order()
    declined = _create_and_confirm(order_id, payment_method="pm_card_chargeDeclinedInsufficientFunds")
    assert declined.declined and declined.decline_code == "insufficient_funds"
    assert _intents_of(emulator, order_id) == [declined.intent_id]
    ok = _confirm(order_id, declined.intent_id, "pm_card_visa", 2)
    assert ok.succeeded and _intents_of(emulator, order_id) == [declined.intent_id]
    assert payment_get(order_id=order_id).status == "succeeded"


def test_unknown_payment_method_is_payment_method_invalid_and_creates_nothing(emulator):
    order_id = _order()
    with pytest.raises(PaymentMethodInvalid) as exc:
        _create_and_confirm(order_id, payment_method="pm_nope")
    assert exc.value.code == "payment_method_invalid" and exc.value.intent is None
    assert _intents_of(emulator, order_id) == []
    intent = payment_intent_create(order_id=order_id, checkout_id="chk_d", amount=1500, currency="usd")
    with pytest.raises(PaymentMethodInvalid):
        payment_intent_confirm(order_id=order_id, intent_id=intent.intent_id, payment_method="pm_nope", attempt=2)
    assert payment_intent_retrieve(intent_id=intent.intent_id).status == "requires_payment_method"
    outcomes = list(PaymentAttempt.objects.filter(payment__order_id=order_id).values_list("operation", "outcome"))
    assert outcomes == [("create_confirm", "permanent"), ("create", "ok"), ("confirm", "permanent")]
