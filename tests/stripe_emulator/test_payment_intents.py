"""The emulator's PaymentIntents, charges and refunds, through the real ``stripe`` client.

These tests need no database: the emulator is plain HTTP in a thread.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
import stripe

CREATE = {"amount": 2500, "currency": "usd", "metadata": {"order_id": "42", "checkout_id": "co_1"}}


@pytest.fixture
def client(emulator):
    return emulator.client()


def test_create_returns_a_stripe_shaped_payment_intent(client):
    pi = client.v1.payment_intents.create(params={**CREATE, "automatic_payment_methods": {"enabled": False}})
    assert pi.object == "payment_intent"
    assert pi.id.startswith("pi_")
    assert pi.client_secret.startswith(pi.id + "_secret_")
    assert (pi.amount, pi.currency, pi.status) == (2500, "usd", "requires_payment_method")
    assert pi.metadata.to_dict() == {"order_id": "42", "checkout_id": "co_1"}
    assert pi.livemode is False and pi.capture_method == "automatic" and pi.confirmation_method == "automatic"
    assert pi.latest_charge is None and pi.amount_received == 0 and pi.last_payment_error is None
    assert client.v1.payment_intents.retrieve(pi.id).to_dict() == pi.to_dict()


def test_requests_without_an_api_key_are_refused(emulator):
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(emulator.url + "/v1/payment_intents", timeout=5)
    assert excinfo.value.code == 401
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient("nope", base_addresses={"api": emulator.url}).v1.payment_intents.list()


def test_missing_amount_and_unknown_params_are_invalid_requests(client):
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.payment_intents.create(params={"currency": "usd"})
    assert (excinfo.value.http_status, excinfo.value.code, excinfo.value.param) == (400, "parameter_missing", "amount")
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.payment_intents.create(params={**CREATE, "colour": "red"})
    assert excinfo.value.code == "parameter_unknown"


def test_retrieving_an_unknown_payment_intent_is_a_404(client):
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.payment_intents.retrieve("pi_missing")
    assert (excinfo.value.http_status, excinfo.value.code) == (404, "resource_missing")


def test_confirm_with_pm_card_visa_succeeds_with_a_captured_charge(client):
    pi = client.v1.payment_intents.create(params=CREATE)
    done = client.v1.payment_intents.confirm(
        pi.id, params={"payment_method": "pm_card_visa", "expand": ["latest_charge"]}
    )
    assert done.status == "succeeded" and done.amount_received == 2500
    assert done.payment_method.startswith("pm_") and done.payment_method != "pm_card_visa"
    charge = done.latest_charge
    assert charge.object == "charge" and charge.id.startswith("ch_")
    assert (charge.status, charge.captured, charge.amount_captured, charge.paid) == ("succeeded", True, 2500, True)
    assert charge.payment_intent == pi.id


def test_create_with_confirm_true_charges_in_one_call(client):
    pi = client.v1.payment_intents.create(params={**CREATE, "confirm": True, "payment_method": "pm_card_mastercard"})
    assert pi.status == "succeeded" and pi.latest_charge.startswith("ch_")


def test_confirming_a_succeeded_payment_intent_is_an_unexpected_state(client):
    pi = client.v1.payment_intents.create(params={**CREATE, "confirm": True, "payment_method": "pm_card_visa"})
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert (excinfo.value.http_status, excinfo.value.code) == (400, "payment_intent_unexpected_state")
    assert excinfo.value.error.payment_intent.status == "succeeded"


def test_confirm_without_a_payment_method_is_refused(client):
    pi = client.v1.payment_intents.create(params=CREATE)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.payment_intents.confirm(pi.id)
    assert excinfo.value.code == "payment_intent_unexpected_state"


def test_an_unknown_payment_method_is_a_resource_missing(client):
    pi = client.v1.payment_intents.create(params=CREATE)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_bogus"})
    assert (excinfo.value.code, excinfo.value.param) == ("resource_missing", "payment_method")


@pytest.mark.parametrize(
    ("payment_method", "code", "decline_code"),
    [
        ("pm_card_visa_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("pm_card_visa_chargeDeclinedLostCard", "card_declined", "lost_card"),
        ("pm_card_visa_chargeDeclinedStolenCard", "card_declined", "stolen_card"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
        ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
    ],
)
def test_declining_test_cards_raise_card_errors_and_reopen_the_intent(client, payment_method, code, decline_code):
    pi = client.v1.payment_intents.create(params=CREATE)
    with pytest.raises(stripe.CardError) as excinfo:
        client.v1.payment_intents.confirm(pi.id, params={"payment_method": payment_method})
    err = excinfo.value
    assert (err.http_status, err.code, err.error.decline_code, err.error.type) == (
        402,
        code,
        decline_code,
        "card_error",
    )
    assert err.error.payment_intent.id == pi.id
    after = client.v1.payment_intents.retrieve(pi.id, params={"expand": ["latest_charge"]})
    assert after.status == "requires_payment_method" and after.payment_method is None
    assert (after.last_payment_error.code, after.last_payment_error.decline_code) == (code, decline_code)
    assert after.latest_charge.status == "failed" and after.latest_charge.failure_code == code
    # The buyer may try again with another card.
    assert client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"}).status == "succeeded"


@pytest.mark.parametrize("payment_method", ["pm_card_threeDSecure2Required", "pm_card_authenticationRequired"])
def test_3ds_cards_require_action_until_authenticated(client, emulator, payment_method):
    pi = client.v1.payment_intents.create(params=CREATE)
    pending = client.v1.payment_intents.confirm(pi.id, params={"payment_method": payment_method})
    assert pending.status == "requires_action"
    assert pending.next_action.type == "use_stripe_sdk"
    emulator.authenticate(pi.id, "succeed")
    done = client.v1.payment_intents.retrieve(pi.id)
    assert done.status == "succeeded" and done.amount_received == 2500


def test_failed_3ds_reopens_the_intent_with_an_authentication_error(client, emulator):
    pi = client.v1.payment_intents.create(params=CREATE)
    client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_threeDSecure2Required"})
    emulator.authenticate(pi.id, "fail")
    after = client.v1.payment_intents.retrieve(pi.id)
    assert after.status == "requires_payment_method"
    assert after.last_payment_error.code == "payment_intent_authentication_failure"


def test_3ds_card_off_session_is_declined_as_authentication_required(client):
    pi = client.v1.payment_intents.create(params=CREATE)
    with pytest.raises(stripe.CardError) as excinfo:
        client.v1.payment_intents.confirm(
            pi.id, params={"payment_method": "pm_card_authenticationRequired", "off_session": True}
        )
    assert excinfo.value.code == "authentication_required"


def test_cancel_then_cancel_a_succeeded_one_is_refused(client):
    pi = client.v1.payment_intents.create(params=CREATE)
    cancelled = client.v1.payment_intents.cancel(pi.id, params={"cancellation_reason": "abandoned"})
    assert (cancelled.status, cancelled.cancellation_reason) == ("canceled", "abandoned")
    assert cancelled.canceled_at is not None
    paid = client.v1.payment_intents.create(params={**CREATE, "confirm": True, "payment_method": "pm_card_visa"})
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.payment_intents.cancel(paid.id)
    assert excinfo.value.code == "payment_intent_unexpected_state"


def test_manual_capture_holds_then_captures(client):
    pi = client.v1.payment_intents.create(
        params={**CREATE, "capture_method": "manual", "confirm": True, "payment_method": "pm_card_visa"}
    )
    assert (pi.status, pi.amount_capturable, pi.amount_received) == ("requires_capture", 2500, 0)
    captured = client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 2000})
    assert (captured.status, captured.amount_received, captured.amount_capturable) == ("succeeded", 2000, 0)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.capture(pi.id)


def test_refunds_partial_then_rest_then_refuse_more(client):
    pi = client.v1.payment_intents.create(params={**CREATE, "confirm": True, "payment_method": "pm_card_visa"})
    first = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1000})
    assert (first.object, first.status, first.amount, first.payment_intent) == ("refund", "succeeded", 1000, pi.id)
    assert client.v1.refunds.retrieve(first.id).amount == 1000
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 2000})
    assert (excinfo.value.code, excinfo.value.param) == ("amount_too_large", "amount")
    rest = client.v1.refunds.create(params={"payment_intent": pi.id})
    assert rest.amount == 1500
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (2500, True)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.refunds.create(params={"payment_intent": pi.id})
    assert excinfo.value.code == "charge_already_refunded"


def test_a_refund_that_fails_later_gives_its_amount_back_to_the_charge_and_says_so(client, emulator):
    """Like a card network refusing a refund days later: the charge's refunded amount goes back down, and
    ``refund.updated`` (with ``charge.refund.updated`` and ``refund.failed``) tell the webhook."""
    pi = client.v1.payment_intents.create(params={**CREATE, "confirm": True, "payment_method": "pm_card_visa"})
    refund = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1000})
    assert emulator.settle_refund(refund.id, "pending")["status"] == "pending"
    assert client.v1.charges.retrieve(pi.latest_charge).amount_refunded == 1000  # pending still counts
    failed = emulator.settle_refund(refund.id, "failed")
    assert (failed["status"], failed["failure_reason"]) == ("failed", "expired_or_canceled_card")
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (0, False)
    assert client.v1.refunds.retrieve(refund.id).status == "failed"
    updates = [e["data"]["object"]["status"] for e in emulator.events("refund.updated")]
    assert updates == ["pending", "failed"] and len(emulator.events("refund.failed")) == 1
    assert len(emulator.events("charge.refund.updated")) == 2
    with pytest.raises(AssertionError, match="refund_not_updatable"):
        emulator.settle_refund(refund.id, "succeeded")  # a failed refund stays failed
    rest = client.v1.refunds.create(params={"payment_intent": pi.id})
    assert rest.amount == 2500  # what failed can be refunded again


def test_refunding_an_unpaid_intent_is_refused(client):
    pi = client.v1.payment_intents.create(params=CREATE)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create(params={"payment_intent": pi.id})


def test_list_pages_newest_first_with_starting_after(client):
    ids = [client.v1.payment_intents.create(params=CREATE).id for _ in range(5)]
    first = client.v1.payment_intents.list(params={"limit": 2})
    assert [p.id for p in first.data] == ids[::-1][:2] and first.has_more is True
    second = client.v1.payment_intents.list(params={"limit": 2, "starting_after": first.data[-1].id})
    assert [p.id for p in second.data] == ids[::-1][2:4] and second.has_more is True
    last = client.v1.payment_intents.list(params={"limit": 2, "starting_after": second.data[-1].id})
    assert [p.id for p in last.data] == ids[:1] and last.has_more is False
    assert [p.id for p in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()] == ids[::-1]


def test_update_merges_metadata(client):
    pi = client.v1.payment_intents.create(params=CREATE)
    updated = client.v1.payment_intents.update(pi.id, params={"metadata": {"attempt": "2", "checkout_id": ""}})
    assert updated.metadata.to_dict() == {"order_id": "42", "attempt": "2"}
