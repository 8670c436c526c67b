"""Manual capture in payments/gateway.py (``CARTFLOW_CAPTURE_METHOD=manual``): the authorization, the capture
under the order's one key, the void, and what the results say, through the real ``stripe`` client against
the emulator. Gateway calls refuse a transaction, so these tests are ``transaction=True``."""

from __future__ import annotations

import uuid

import pytest

from payments.gateway import (
    payment_intent_cancel,
    payment_intent_capture,
    payment_intent_create,
    payment_intent_create_and_confirm,
    payment_intent_retrieve,
)
from payments.models import PaymentAttempt
from payments.selectors import payment_get

pytestmark = pytest.mark.django_db(transaction=True)
CAPTURE = "POST /v1/payment_intents/*/capture"


@pytest.fixture
def manual(stripe_emulator, settings):
    settings.CARTFLOW_CAPTURE_METHOD = "manual"
    settings.STRIPE_MAX_NETWORK_RETRIES = 2
    return stripe_emulator


def _authorize(order_id: str, amount: int = 2500):
    return payment_intent_create_and_confirm(
        order_id=order_id, checkout_id="chk_1", amount=amount, currency="usd", attempt=1, payment_method="pm_card_visa"
    )


def _order() -> str:
    return f"ord_{uuid.uuid4().hex[:12]}"


def test_with_manual_capture_the_confirm_only_authorizes(manual):
    order_id = _order()
    held = _authorize(order_id)
    assert (held.status, held.amount_capturable, held.amount_received, held.amount_refunded) == (
        "requires_capture", 2500, 0, 0,
    )  # fmt: skip
    assert manual.server.state.payment_intents[held.intent_id]["capture_method"] == "manual"
    assert payment_get(order_id=order_id).status == "requires_capture"
    # An intent made for Stripe.js is created the same way: whoever confirms it only authorizes.
    unconfirmed = payment_intent_create(order_id=_order(), checkout_id="chk_2", amount=2500, currency="usd")
    assert manual.server.state.payment_intents[unconfirmed.intent_id]["capture_method"] == "manual"


def test_automatic_is_the_default(stripe_emulator):
    paid = _authorize(_order())
    assert (paid.status, paid.amount_received) == ("succeeded", 2500)


def test_capture_takes_the_money_once_under_the_orders_key(manual):
    order_id = _order()
    held = _authorize(order_id)
    captured = payment_intent_capture(order_id=order_id, intent_id=held.intent_id)
    assert (captured.status, captured.amount_received, captured.amount_capturable) == ("succeeded", 2500, 0)
    again = payment_intent_capture(order_id=order_id, intent_id=held.intent_id)  # a replay: Stripe's stored answer
    assert (again.status, again.amount_received) == ("succeeded", 2500)
    assert len(manual.events("charge.captured")) == 1
    keys = set(PaymentAttempt.objects.filter(operation="capture").values_list("idempotency_key", flat=True))
    assert keys == {f"cf:{order_id}:capture"}
    payment = payment_get(order_id=order_id)
    assert (payment.status, payment.amount_refunded) == ("succeeded", 0)


def test_a_capture_whose_answer_was_lost_is_replayed_and_captures_once(manual):
    order_id = _order()
    held = _authorize(order_id)
    manual.add_fault(CAPTURE, "lose_response")  # Stripe captures, the answer never arrives; the client retries
    captured = payment_intent_capture(order_id=order_id, intent_id=held.intent_id)
    assert captured.status == "succeeded" and len(manual.events("charge.captured")) == 1


def test_capture_of_a_voided_or_expired_authorization_answers_canceled(manual):
    voided_order, expired_order = _order(), _order()
    voided = _authorize(voided_order)
    assert payment_intent_cancel(order_id=voided_order, intent_id=voided.intent_id).status == "canceled"
    expired = _authorize(expired_order)
    manual.advance_clock(7 * 24 * 3600 + 60)  # Stripe cancels an authorization left for seven days
    for order_id, intent in ((voided_order, voided), (expired_order, expired)):
        refused = payment_intent_capture(order_id=order_id, intent_id=intent.intent_id)
        assert (refused.status, refused.amount_received) == ("canceled", 0)
        # Stripe shows the released hold as "refunded" on the charge; no money went back, none was taken.
        assert payment_intent_retrieve(intent_id=intent.intent_id).amount_refunded == 0
        assert (payment_get(order_id=order_id).status, payment_get(order_id=order_id).amount_refunded) == (
            "canceled", 0,
        )  # fmt: skip
    assert manual.events("charge.captured") == []


def test_a_partial_capture_counts_as_taken_what_was_captured(manual):
    order_id = _order()
    held = _authorize(order_id)
    captured = payment_intent_capture(order_id=order_id, intent_id=held.intent_id, amount=2000)
    assert (captured.status, captured.amount_received) == ("succeeded", 2000)
    # The released 500 is no refund of the 2000 taken.
    assert payment_intent_retrieve(intent_id=held.intent_id).amount_refunded == 0
