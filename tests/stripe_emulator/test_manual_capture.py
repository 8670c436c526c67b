"""Authorize now, capture later (``capture_method=manual``), through the real ``stripe`` client: the hold,
the capture (all or part, replayed under its idempotency key), the void, and Stripe's own expiry of an
authorization after seven days, each with the events Stripe sends."""

from __future__ import annotations

import pytest
import stripe

from stripe_emulator.state import AUTHORIZATION_SECONDS

MANUAL = {"amount": 2500, "currency": "usd", "metadata": {"order_id": "7"}, "capture_method": "manual"}


@pytest.fixture
def client(emulator):
    return emulator.client()


def _authorize(client, **params):
    return client.v1.payment_intents.create(
        params={**MANUAL, "confirm": True, "payment_method": "pm_card_visa", **params}
    )


def _types(emulator) -> list[str]:
    return [event["type"] for event in emulator.events()]


def test_a_manual_confirm_authorizes_and_takes_nothing(client, emulator):
    pi = _authorize(client)
    assert (pi.status, pi.capture_method, pi.amount_capturable, pi.amount_received) == (
        "requires_capture", "manual", 2500, 0,
    )  # fmt: skip
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.status, charge.captured, charge.amount_captured, charge.amount_refunded) == (
        "succeeded",
        False,
        0,
        0,
    )
    assert _types(emulator) == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.amount_capturable_updated",
    ]
    updated = emulator.events("payment_intent.amount_capturable_updated")[0]["data"]["object"]
    assert (updated["status"], updated["amount_capturable"]) == ("requires_capture", 2500)


def test_capture_without_an_amount_takes_all_of_it(client, emulator):
    pi = _authorize(client)
    captured = client.v1.payment_intents.capture(pi.id)
    assert (captured.status, captured.amount_received, captured.amount_capturable) == ("succeeded", 2500, 0)
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.captured, charge.amount_captured, charge.amount_refunded) == (True, 2500, 0)
    assert _types(emulator)[-2:] == ["charge.captured", "payment_intent.succeeded"]
    assert emulator.events("payment_intent.succeeded")[0]["data"]["object"]["amount_received"] == 2500
    assert client.v1.refunds.create(params={"payment_intent": pi.id}).amount == 2500  # captured money refunds


def test_a_partial_capture_releases_the_rest_and_refunds_only_what_was_taken(client):
    pi = _authorize(client)
    captured = client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 2000})
    assert (captured.status, captured.amount_received) == ("succeeded", 2000)
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_captured, charge.amount_refunded) == (2000, 500)  # Stripe shows the release as refunded
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 2001})
    assert excinfo.value.code == "amount_too_large"
    assert client.v1.refunds.create(params={"payment_intent": pi.id}).amount == 2000


def test_more_than_the_authorization_is_refused_and_the_hold_stays(client):
    pi = _authorize(client)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 2501})
    assert (excinfo.value.code, excinfo.value.param) == ("amount_too_large", "amount_to_capture")
    assert client.v1.payment_intents.retrieve(pi.id).status == "requires_capture"


def test_a_capture_replayed_under_its_key_captures_once(client, emulator):
    pi = _authorize(client)
    first = client.v1.payment_intents.capture(pi.id, options={"idempotency_key": "cap-1"})
    again = client.v1.payment_intents.capture(pi.id, options={"idempotency_key": "cap-1"})
    assert first.to_dict() == again.to_dict() and again.status == "succeeded"
    assert len(emulator.events("charge.captured")) == 1 and len(emulator.events("payment_intent.succeeded")) == 1
    with pytest.raises(stripe.InvalidRequestError) as excinfo:  # another key: a second capture is refused
        client.v1.payment_intents.capture(pi.id, options={"idempotency_key": "cap-2"})
    assert excinfo.value.code == "payment_intent_unexpected_state"


def test_cancelling_an_authorization_voids_it(client, emulator):
    pi = _authorize(client)
    voided = client.v1.payment_intents.cancel(pi.id)
    assert (voided.status, voided.amount_capturable, voided.amount_received) == ("canceled", 0, 0)
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.captured, charge.refunded, charge.amount_refunded) == (False, True, 2500)
    assert _types(emulator)[-1] == "payment_intent.canceled"
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.payment_intents.capture(pi.id)
    assert excinfo.value.code == "payment_intent_unexpected_state"
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.refunds.create(params={"payment_intent": pi.id})
    assert excinfo.value.code == "charge_not_refundable"


def test_a_three_d_secure_authorization_ends_in_requires_capture(client, emulator):
    pi = client.v1.payment_intents.create(params=MANUAL)
    # The capture method may also come with the confirm (a storefront that confirms with Stripe.js).
    pending = client.v1.payment_intents.confirm(
        pi.id, params={"payment_method": "pm_card_threeDSecure2Required", "capture_method": "manual"}
    )
    assert pending.status == "requires_action"
    assert emulator.authenticate(pi.id, "succeed")["status"] == "requires_capture"
    assert _types(emulator)[-1] == "payment_intent.amount_capturable_updated"


def test_stripe_cancels_an_authorization_left_for_seven_days(client, emulator):
    pi = _authorize(client)
    other = _authorize(client)
    client.v1.payment_intents.capture(other.id)
    emulator.advance_clock(AUTHORIZATION_SECONDS - 60)
    assert client.v1.payment_intents.retrieve(pi.id).status == "requires_capture"

    emulator.advance_clock(120)
    expired = client.v1.payment_intents.retrieve(pi.id)
    assert (expired.status, expired.cancellation_reason, expired.amount_capturable) == ("canceled", "automatic", 0)
    assert client.v1.payment_intents.retrieve(other.id).status == "succeeded"  # a captured one is not touched
    assert _types(emulator)[-2:] == ["charge.expired", "payment_intent.canceled"]
    assert emulator.events("charge.expired")[0]["data"]["object"]["amount_refunded"] == 2500
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.payment_intents.capture(pi.id)
    assert excinfo.value.code == "payment_intent_unexpected_state"
