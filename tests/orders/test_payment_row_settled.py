"""Whoever settles the saga records the PaymentIntent on the order's Payment row (payments' service): the
confirm's answer (the gateway records it), the webhook (its handler), and recovery, which learns the outcome
by reading the PaymentIntent (orders/saga/payment_steps.py ``settle_charge``) and used to leave the row as
it was until the hourly reconciliation."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from orders.models import CheckoutSaga
from orders.saga.crashpoints import SimulatedCrash, crash_points
from orders.saga.driver import checkout_confirm, checkout_payment_intent, checkout_start, saga_resume
from payments.errors import PaymentTransientError
from payments.selectors import payment_get
from tests.support.saga import charges, guest_with_cart, invariants_hold, make_product

pytestmark = pytest.mark.django_db(transaction=True)


def _started(product) -> CheckoutSaga:  # noqa: ANN001
    from cart.identity import cart_ref_for_token

    client = guest_with_cart((product, 2))
    saga, created = checkout_start(cart_key=cart_ref_for_token(client._credentials["HTTP_X_CART_TOKEN"]).key)
    assert created
    return saga


def test_recovery_that_finds_the_lost_confirm_paid_records_it_on_the_payment_row(stripe_emulator, settings):
    """The confirm reached Stripe but its answer was lost, and Stripe could not be read either: the checkout
    is left ``indeterminate``. ``recover_sagas`` reads the PaymentIntent, fulfils the order and records
    ``succeeded`` and the amount on the Payment row."""
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    saga = _started(make_product(price=1250))
    intent_id = checkout_payment_intent(saga_id=saga.pk).payment_intent_id
    assert payment_get(order_id=saga.order.public_id).status == "requires_payment_method"

    stripe_emulator.add_fault("POST /v1/payment_intents/*/confirm", "lose_response", times=1)
    stripe_emulator.add_fault("GET /v1/payment_intents/*", "http_500", times=0)
    with pytest.raises(PaymentTransientError):
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa")
    stripe_emulator.clear_faults()
    lost = CheckoutSaga.objects.get(pk=saga.pk)
    assert (lost.step, lost.step_status, lost.state) == ("charge", "indeterminate", "awaiting_payment")
    assert stripe_emulator.server.state.payment_intents[intent_id]["status"] == "succeeded"
    assert payment_get(order_id=saga.order.public_id).status == "requires_payment_method"  # nobody knows yet

    call_command("recover_sagas")

    assert CheckoutSaga.objects.get(pk=saga.pk).state == "fulfilled"
    payment = payment_get(order_id=saga.order.public_id)
    assert (payment.intent_id, payment.status) == (intent_id, "succeeded")
    assert (payment.amount, payment.currency, payment.amount_refunded) == (2500, "usd", 0)
    assert charges(stripe_emulator) == 1
    invariants_hold()


def test_a_process_that_dies_as_it_learns_the_lost_outcome_has_recorded_it_first(stripe_emulator, settings):
    """The same lost answer, and the process dies between reading "succeeded" and saving it (crash point
    ``charge:after``): the Payment row already says what Stripe said, and recovery finishes the order."""
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.CARTFLOW_SAGA_LEASE_SECONDS = 0  # the dead process's lease lapses at once
    saga = _started(make_product(price=1250))
    checkout_payment_intent(saga_id=saga.pk)
    stripe_emulator.add_fault("POST /v1/payment_intents/*/confirm", "lose_response", times=1)
    crash_points.add("charge:after")
    with pytest.raises(SimulatedCrash):
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa")
    assert CheckoutSaga.objects.get(pk=saga.pk).step_status == "indeterminate"
    assert payment_get(order_id=saga.order.public_id).status == "succeeded"

    call_command("recover_sagas")
    assert CheckoutSaga.objects.get(pk=saga.pk).state == "fulfilled"
    assert payment_get(order_id=saga.order.public_id).status == "succeeded" and charges(stripe_emulator) == 1
    invariants_hold()


def test_resume_of_a_three_d_secure_checkout_whose_webhook_was_lost_records_the_payment(stripe_emulator):
    saga = _started(make_product(price=900))
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_threeDSecure2Required").state == "requires_action"
    intent_id = CheckoutSaga.objects.get(pk=saga.pk).payment_intent_id
    assert payment_get(order_id=saga.order.public_id).status == "requires_action"
    stripe_emulator.authenticate(intent_id)  # the buyer passed 3-D Secure; its webhook never arrives

    assert saga_resume(saga_id=saga.pk).state == "confirmed"

    payment = payment_get(order_id=saga.order.public_id)
    assert (payment.status, payment.amount, payment.currency) == ("succeeded", 1800, "usd")
    invariants_hold()
