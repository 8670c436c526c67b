"""Authorize now, capture at fulfilment (``CARTFLOW_CAPTURE_METHOD=manual``), through the saga in this process.

The confirm only authorizes (the PaymentIntent ends ``requires_capture``) and confirms the order; the outbox
consumer captures before it fulfils; a compensation voids instead of refunding; a crash around the capture
is finished by recovery with one capture; a capture Stripe refuses hands the order to staff; the beat task's
body settles authorizations older than ``CARTFLOW_CAPTURE_WITHIN_HOURS``. The emulator is the witness of the
money (its PaymentIntents, charges and events). The real worker and beat: tests/e2e/test_manual_capture.py and
tests/cartflow/test_scheduled_jobs.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from cart.identity import cart_ref_for_token
from cartflow.invariants import run_all
from inventory.services import reservation_release
from orders.models import CheckoutSaga, Order, Outbox
from orders.saga.authorizations import authorizations_due, authorizations_settle
from orders.saga.crashpoints import SimulatedCrash, crash_points
from orders.saga.driver import checkout_cancel, checkout_confirm, checkout_payment_intent, checkout_start, saga_recover
from orders.services import outbox_process_pending
from payments.gateway import payment_intent_retrieve
from payments.hooks import intent_listeners_notify
from payments.models import Payment
from tests.support.saga import guest_with_cart, held, intents_of_order, invariants_hold, later, make_product, stock

pytestmark = pytest.mark.django_db(transaction=True)
DAYS_7 = 7 * 24 * 3600


@pytest.fixture(autouse=True)
def manual(settings):
    settings.CARTFLOW_CAPTURE_METHOD = "manual"
    crash_points.clear()
    yield
    crash_points.clear()


def _checkout(product, quantity: int = 2) -> CheckoutSaga:  # noqa: ANN001
    client = guest_with_cart((product, quantity))
    saga, created = checkout_start(cart_key=cart_ref_for_token(client._credentials["HTTP_X_CART_TOKEN"]).key)
    assert created
    return saga


def _reload(saga: CheckoutSaga) -> CheckoutSaga:
    return CheckoutSaga.objects.select_related("order").get(pk=saga.pk)


def _stripe(emulator, saga: CheckoutSaga) -> dict:  # noqa: ANN001
    """The order's PaymentIntent and its charge as the emulator holds them."""
    state = emulator.server.state
    with state.lock:
        pi = dict(state.payment_intents[saga.payment_intent_id])
        return {**pi, "charge": dict(state.charges[pi["latest_charge"]]) if pi["latest_charge"] else None}


def _captures(emulator) -> int:  # noqa: ANN001
    return len(emulator.events("charge.captured"))


def _refunds(emulator) -> int:  # noqa: ANN001
    return emulator.control("GET", "/_emulator/health")["refunds"]


def _steps(saga: CheckoutSaga) -> list[tuple[str, str]]:
    return [(row.step, row.outcome) for row in saga.log.all()]


def _authorized(emulator, product) -> CheckoutSaga:  # noqa: ANN001
    """A checkout the buyer confirmed: authorized at Stripe, confirmed here, its fulfilment not run yet."""
    saga = _checkout(product)
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa").state == "confirmed"
    return _reload(saga)


def test_confirm_authorizes_and_fulfilment_captures(stripe_emulator):
    product = make_product(price=1250, on_hand=5)
    saga = _authorized(stripe_emulator, product)
    at_stripe = _stripe(stripe_emulator, saga)
    assert (at_stripe["status"], at_stripe["amount_capturable"], at_stripe["amount_received"]) == (
        "requires_capture", 2500, 0,
    )  # fmt: skip
    assert at_stripe["capture_method"] == "manual" and at_stripe["charge"]["captured"] is False
    assert (saga.order.status, saga.order.payment_status) == ("confirmed", "requires_capture")
    assert Payment.objects.get(order_id=saga.order.public_id).status == "requires_capture"
    assert stock(product) == (3, 0)  # sold: the stock is committed at confirm, as with an immediate capture

    outbox_process_pending()  # the outbox consumer: capture, then fulfil
    saga = _reload(saga)
    assert saga.state == "fulfilled"
    at_stripe = _stripe(stripe_emulator, saga)
    assert (at_stripe["status"], at_stripe["amount_received"], at_stripe["amount_capturable"]) == ("succeeded", 2500, 0)
    assert (at_stripe["charge"]["captured"], at_stripe["charge"]["amount_captured"]) == (True, 2500)
    assert _captures(stripe_emulator) == 1 and _refunds(stripe_emulator) == 0
    assert saga.order.payment_status == "succeeded"
    assert Payment.objects.get(order_id=saga.order.public_id).status == "succeeded"
    assert _steps(saga)[-4:] == [
        ("capture", "about_to"),
        ("capture", "done"),
        ("fulfil", "about_to"),
        ("fulfil", "done"),
    ]
    assert Outbox.objects.filter(processed_at__isnull=True).count() == 0
    invariants_hold()


def test_a_three_d_secure_authorization_arrives_by_webhook_and_is_captured_at_fulfilment(stripe_emulator):
    product = make_product()
    saga = _checkout(product)
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_threeDSecure2Required").state == "requires_action"
    saga = _reload(saga)
    stripe_emulator.authenticate(saga.payment_intent_id)  # the buyer passes 3-D Secure: authorized, not captured
    intent_listeners_notify(intent=payment_intent_retrieve(intent_id=saga.payment_intent_id), source="webhook")
    assert _reload(saga).state == "confirmed" and _captures(stripe_emulator) == 0
    outbox_process_pending()
    assert _reload(saga).state == "fulfilled" and _stripe(stripe_emulator, saga)["amount_received"] == 2500
    invariants_hold()


def test_cancelling_an_authorized_checkout_voids_it_and_refunds_nothing(stripe_emulator):
    """The buyer passed 3-D Secure at Stripe (authorized), but the news has not reached the checkout when they
    cancel it: compensation cancels the PaymentIntent, which gives the hold back; nothing is refunded."""
    product = make_product()
    saga = _checkout(product)
    checkout_confirm(saga_id=saga.pk, payment_method="pm_card_threeDSecure2Required")
    saga = _reload(saga)
    stripe_emulator.authenticate(saga.payment_intent_id)
    assert _stripe(stripe_emulator, saga)["status"] == "requires_capture"

    assert checkout_cancel(saga_id=saga.pk).state == "cancelled"
    saga = _reload(saga)
    at_stripe = _stripe(stripe_emulator, saga)
    assert (at_stripe["status"], at_stripe["amount_received"], at_stripe["amount_capturable"]) == ("canceled", 0, 0)
    assert _captures(stripe_emulator) == 0 and _refunds(stripe_emulator) == 0
    assert (saga.order.status, saga.order.payment_status, saga.order.amount_refunded) == ("cancelled", "canceled", 0)
    payment = Payment.objects.get(order_id=saga.order.public_id)
    assert (payment.status, payment.amount_refunded) == ("canceled", 0)  # a void is no refund
    assert stock(product) == (10, 0) and held(saga.public_id) == 0
    invariants_hold()


def test_an_authorization_whose_stock_is_gone_is_voided(stripe_emulator):
    """Authorized as the hold lapsed and someone else bought the stock: the order cannot be filled, so the
    compensation to ``failed`` voids the authorization where a captured payment would be refunded."""
    product = make_product(on_hand=2)
    saga = _checkout(product)
    checkout_confirm(saga_id=saga.pk, payment_method="pm_card_threeDSecure2Required")
    reservation_release(holder=saga.public_id, status="EXPIRED")
    _checkout(product)  # someone else takes both units
    saga = _reload(saga)
    stripe_emulator.authenticate(saga.payment_intent_id)
    intent_listeners_notify(intent=payment_intent_retrieve(intent_id=saga.payment_intent_id), source="webhook")
    saga = _reload(saga)
    assert saga.state == "failed" and _stripe(stripe_emulator, saga)["status"] == "canceled"
    assert _captures(stripe_emulator) == 0 and _refunds(stripe_emulator) == 0
    assert ("cancel_payment_intent", "done") in _steps(saga) and ("refund", "about_to") not in _steps(saga)
    invariants_hold()


def test_an_authorization_that_lands_on_an_ended_checkout_is_voided_by_the_listener(stripe_emulator, settings):
    """The checkout never learnt its PaymentIntent (the create's answers were lost), and its cancel could not
    ask Stripe for it either, so the intent outlived the checkout. The buyer then authorizes it with Stripe.js:
    the webhook's listener adopts the intent and voids it, as it refunds money landing on a dead checkout."""
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    product = make_product()
    saga = _checkout(product)
    stripe_emulator.add_fault("POST /v1/payment_intents", "lose_response")
    with pytest.raises(Exception) as lost:
        checkout_payment_intent(saga_id=saga.pk)
    assert getattr(lost.value, "code", "") == "payment_provider_unavailable"
    stripe_emulator.add_fault("POST /v1/payment_intents", "http_500")
    assert checkout_cancel(saga_id=saga.pk).state == "cancelled" and not _reload(saga).payment_intent_id
    [stray] = intents_of_order(stripe_emulator, saga.order.public_id)
    stripe_emulator.client().v1.payment_intents.confirm(stray, params={"payment_method": "pm_card_visa"})

    intent_listeners_notify(intent=payment_intent_retrieve(intent_id=stray), source="webhook")
    saga = _reload(saga)
    assert (saga.state, saga.payment_intent_id) == ("cancelled", stray)
    assert payment_intent_retrieve(intent_id=stray).status == "canceled"
    assert _captures(stripe_emulator) == 0 and _refunds(stripe_emulator) == 0
    invariants_hold()


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_around_the_capture_is_finished_by_recovery_with_one_capture(stripe_emulator, when):
    """``before``: "about to capture" is saved, nothing sent. ``after``: Stripe captured, "done" never saved.
    Recovery replays the capture under the order's key: Stripe returns the capture it made (or makes it now)."""
    product = make_product()
    saga = _authorized(stripe_emulator, product)
    crash_points.add(f"capture:{when}")
    with pytest.raises(SimulatedCrash):
        outbox_process_pending()
    crashed = _reload(saga)
    assert (crashed.state, crashed.step, crashed.step_status) == ("confirmed", "capture", "about_to")
    assert crashed.lease_owner  # the dead process kept its lease
    assert _captures(stripe_emulator) == (0 if when == "before" else 1)

    saga_recover(now=later())  # the lease lapsed: recovery finishes the capture that was cut off
    saga = _reload(saga)
    assert (saga.state, saga.step, saga.step_status) == ("confirmed", "capture", "done")
    outbox_process_pending()  # fulfilment: already captured, so straight on
    saga = _reload(saga)
    assert saga.state == "fulfilled" and _stripe(stripe_emulator, saga)["amount_received"] == 2500
    assert _captures(stripe_emulator) == 1 and len(stripe_emulator.events("payment_intent.succeeded")) == 1
    invariants_hold()


def test_a_capture_stripe_refuses_leaves_the_order_confirmed_for_staff(stripe_emulator):
    """The authorization expired at Stripe before fulfilment ran (the outbox consumer was down for a week):
    nothing can be captured, so the order is not fulfilled. It stays confirmed with its stock, flagged for
    review, and its checkout waits for a human; the outbox event is done with (no retry can help)."""
    product = make_product(on_hand=5)
    saga = _authorized(stripe_emulator, product)
    stripe_emulator.advance_clock(DAYS_7 + 60)
    assert _stripe(stripe_emulator, saga)["status"] == "canceled"

    outbox_process_pending()
    saga = _reload(saga)
    assert (saga.state, saga.step, saga.step_status) == ("confirmed", "capture", "failed")
    assert saga.requires_human and saga.last_error_code == "authorization_canceled"
    assert "cancel the order" in saga.human_reason
    assert (saga.order.status, saga.order.payment_status, saga.order.flagged_for_review) == (
        "confirmed", "canceled", True,
    )  # fmt: skip
    assert stock(product) == (3, 0)  # still the buyer's until staff decide
    assert Outbox.objects.filter(processed_at__isnull=True).count() == 0
    assert outbox_process_pending() == 0 and _reload(saga).state == "confirmed"  # never fulfilled unpaid
    assert _captures(stripe_emulator) == 0
    invariants_hold()


def test_a_capture_while_stripe_is_away_is_retried_under_the_same_key(stripe_emulator, settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    product = make_product()
    saga = _authorized(stripe_emulator, product)
    stripe_emulator.add_fault("POST /v1/payment_intents/*/capture", "lose_response")  # captured, answer lost
    with pytest.raises(Exception) as failed:
        outbox_process_pending()
    assert getattr(failed.value, "code", "") == "payment_provider_unavailable"
    assert (_reload(saga).step, _reload(saga).step_status) == ("capture", "indeterminate")
    outbox_process_pending()  # the outbox task's retry
    assert _reload(saga).state == "fulfilled" and _captures(stripe_emulator) == 1
    invariants_hold()


# --- the beat task's body: authorizations older than CARTFLOW_CAPTURE_WITHIN_HOURS ---------------------------


def _aged(saga: CheckoutSaga, hours: float) -> None:
    """The authorization (its Payment row and its order) made ``hours`` ago."""
    then = timezone.now() - timedelta(hours=hours)
    Payment.objects.filter(order_id=saga.order.public_id).update(created=then)
    Order.objects.filter(pk=saga.order_id).update(created_at=then)


def test_an_authorization_left_uncaptured_is_captured_when_its_order_goes_on(stripe_emulator):
    product = make_product()
    saga = _authorized(stripe_emulator, product)  # its fulfilment has not run (the outbox consumer is down)
    _aged(saga, 143)
    assert authorizations_due() == []  # inside the window: fulfilment's to capture
    _aged(saga, 145)
    assert authorizations_due() == [saga.pk]
    assert authorizations_settle()["captured"] == 1
    saga = _reload(saga)
    assert (saga.state, saga.step, saga.step_status) == ("confirmed", "capture", "done")
    assert _stripe(stripe_emulator, saga)["amount_received"] == 2500
    assert authorizations_due() == []
    outbox_process_pending()  # fulfilment, once it runs, does not capture again
    assert _reload(saga).state == "fulfilled" and _captures(stripe_emulator) == 1
    invariants_hold()


def test_an_authorization_standing_on_an_ended_checkout_is_voided(stripe_emulator):
    """The safety net behind the compensation: a checkout that ended while Stripe still holds its authorization
    (here the buyer confirmed the checkout's intent with Stripe.js and the news was lost, and the checkout's
    end is written directly, as if its void had been given up on). The beat task voids it."""
    product = make_product()
    saga = _checkout(product)
    intent_id = checkout_payment_intent(saga_id=saga.pk).payment_intent_id
    stripe_emulator.client().v1.payment_intents.confirm(intent_id, params={"payment_method": "pm_card_visa"})
    assert stripe_emulator.events("payment_intent.amount_capturable_updated")
    reservation_release(holder=saga.public_id)
    CheckoutSaga.objects.filter(pk=saga.pk).update(state="expired")
    Order.objects.filter(pk=saga.order_id).update(status="cancelled")
    Payment.objects.filter(order_id=saga.order.public_id).update(status="requires_capture")
    _aged(saga, 145)

    assert authorizations_settle()["voided"] == 1
    saga = _reload(saga)
    assert _stripe(stripe_emulator, saga)["status"] == "canceled" and _refunds(stripe_emulator) == 0
    assert Payment.objects.get(order_id=saga.order.public_id).status == "canceled"
    assert authorizations_due() == []
    invariants_hold()


# --- check_invariants knows authorizations ----------------------------------------------------------------


def _violations() -> dict[str, list[str]]:
    return {name: found for name, found in run_all().items() if found}


def test_the_invariants_catch_an_authorization_left_behind(stripe_emulator):
    product = make_product()
    saga = _authorized(stripe_emulator, product)
    order = Order.objects.filter(pk=saga.order_id)
    assert _violations() == {}

    order.update(status="fulfilled")  # handed on without its capture
    assert list(_violations()) == ["orders: a fulfilled order's payment was captured"]
    order.update(status="confirmed", payment_status="canceled")  # the authorization gone, and nobody told
    assert list(_violations()) == ["orders: a confirmed order whose authorization is gone waits for staff"]
    order.update(payment_status="requires_capture")
    _aged(saga, 147)  # past the window and the beat task's two hourly turns
    assert list(_violations()) == ["orders: no authorization outlives the capture window"]
    _aged(saga, 0)
    CheckoutSaga.objects.filter(pk=saga.pk).update(state="cancelled")
    order.update(status="cancelled")  # ended, its authorization not voided (and its stock still sold)
    assert "orders: an authorized order is confirmed or fulfilled" in _violations()
