"""The failure matrix: every step failing, and a crash right before and right after its side effect.

A crash is a SimulatedCrash (BaseException) raised at an armed point (orders/saga/crashpoints.py); the lease
it leaves behind lapses and ``saga_recover`` (what ``recover_sagas`` runs) finishes or compensates. After each
case: the right terminal state, stock adds up, at most one charge, and every invariant holds.
"""

from __future__ import annotations

import pytest

from cart.identity import cart_ref_for_token
from inventory.models import Reservation
from inventory.services import reservation_release, reservations_release_expired
from orders.models import CheckoutSaga, Order
from orders.saga.crashpoints import SimulatedCrash, crash_points
from orders.saga.driver import checkout_cancel, checkout_confirm, checkout_payment_intent, checkout_start, saga_recover
from orders.saga.listeners import saga_keeps_hold, saga_on_reservation_expired, saga_settled_for_intent
from orders.services import outbox_process_pending
from payments.errors import PaymentTransientError
from payments.gateway import payment_intent_retrieve
from payments.hooks import intent_listeners_notify
from tests.support.saga import (
    charges,
    guest_with_cart,
    held,
    intents_of_order,
    invariants_hold,
    later,
    make_product,
    refunds,
    stock,
    stripe_request_counter,
)

pytestmark = pytest.mark.django_db(transaction=True)

START_STEPS = ["reserve", "create_order"]


def _cart(product, quantity: int = 2) -> str:  # noqa: ANN001
    client = guest_with_cart((product, quantity))
    return cart_ref_for_token(client._credentials["HTTP_X_CART_TOKEN"]).key


def _start(cart_key: str) -> CheckoutSaga:
    saga, created = checkout_start(cart_key=cart_key)
    assert created
    return saga


def _reload(saga: CheckoutSaga) -> CheckoutSaga:
    return CheckoutSaga.objects.get(pk=saga.pk)


def _finish(saga: CheckoutSaga) -> CheckoutSaga:
    """Pay with a good card and run fulfilment: the saga must end fulfilled."""
    saga = _reload(saga)
    if saga.state in ("awaiting_payment", "requires_action"):
        assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa").state == "confirmed"
    outbox_process_pending()
    saga = _reload(saga)
    assert saga.state == "fulfilled"
    return saga


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", START_STEPS)
def test_crash_during_start_is_rolled_forward_by_recovery(stripe_emulator, settings, step, when):
    settings.CARTFLOW_CHECKOUT_START_WAIT_SECONDS = 0.3  # the busy retry below waits this long, then answers 409
    product = make_product()
    cart_key = _cart(product)
    crash_points.add(f"{step}:{when}")
    with pytest.raises(SimulatedCrash):
        checkout_start(cart_key=cart_key)
    saga = CheckoutSaga.objects.get(cart_key=cart_key)
    # "reserve done" commits with the order, so a crash just before the order leaves "about to reserve"
    # with the units already held; recovery reserves again for the same holder, which holds nothing twice.
    persisted = "reserve" if step == "create_order" else step
    assert saga.state == "reserved" and saga.step == persisted

    # A retry of start while the dead lease is still live: the same checkout, never a second hold.
    with pytest.raises(Exception) as busy:
        checkout_start(cart_key=cart_key)
    assert getattr(busy.value, "code", "") == "checkout_in_progress"

    assert saga_recover(now=later())["resumed"] == 1
    saga = _reload(saga)
    assert saga.state == "awaiting_payment" and saga.lease_owner == ""
    assert held(saga.public_id) == 2 and stock(product) == (10, 2)
    assert Order.objects.count() == 1
    assert stripe_emulator.events() == []  # the start makes no Stripe call, recovered or not
    again, created = checkout_start(cart_key=cart_key)
    assert not created and again.pk == saga.pk

    _finish(saga)
    assert stock(product) == (8, 0) and charges(stripe_emulator) == 1
    invariants_hold()


@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_around_the_charge_is_settled_by_replaying_the_create(stripe_emulator, when):
    """The first charge creates and confirms the intent: a crash leaves no intent id, only "about to charge"
    with its attempt and payment method. Recovery replays that same call with the same key: before, it is
    the buyer's payment made now; after, Stripe returns the intent it made. Either way one intent."""
    product = make_product()
    saga = _start(_cart(product))
    crash_points.add(f"charge:{when}")
    with pytest.raises(SimulatedCrash):
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa")
    crashed = _reload(saga)
    assert crashed.step_status == "about_to" and crashed.payment_intent_id == ""
    assert crashed.charge_params == {"payment_method": "pm_card_visa"} and crashed.attempt == 1
    assert len(intents_of_order(stripe_emulator, saga.order.public_id)) == (0 if when == "before" else 1)
    # While the charge is unknown the expiry sweep keeps the hold (Saleor #15246).
    assert saga_keeps_hold(saga.public_id)

    saga_recover(now=later())
    saga = _reload(saga)
    assert saga.state == "confirmed" and charges(stripe_emulator) == 1
    assert intents_of_order(stripe_emulator, saga.order.public_id) == [saga.payment_intent_id]
    _finish(saga)
    assert stock(product) == (8, 0) and charges(stripe_emulator) == 1 and refunds(stripe_emulator) == 0
    invariants_hold()


@pytest.mark.parametrize("point", ["confirm:before", "confirm:after", "fulfil:before", "fulfil:after"])
def test_crash_around_confirm_and_fulfil_finishes_once(stripe_emulator, point):
    product = make_product()
    saga = _start(_cart(product))
    crash_points.add(point)
    with pytest.raises(SimulatedCrash):
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa")
        outbox_process_pending()
    saga_recover(now=later())
    outbox_process_pending()
    saga = _reload(saga)
    assert saga.state == "fulfilled"
    assert stock(product) == (8, 0)
    assert Reservation.objects.get(holder=saga.public_id).status == "COMMITTED"
    assert charges(stripe_emulator) == 1 and refunds(stripe_emulator) == 0
    invariants_hold()


@pytest.mark.parametrize("step", ["cancel_payment_intent", "cancel_order", "release"])
@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_during_compensation_is_finished_by_recovery(stripe_emulator, step, when):
    product = make_product()
    saga = _start(_cart(product))
    checkout_payment_intent(saga_id=saga.pk)  # a Stripe.js storefront asked for the intent
    crash_points.add(f"{step}:{when}")
    with pytest.raises(SimulatedCrash):
        checkout_cancel(saga_id=saga.pk)
    assert _reload(saga).compensate_to == "cancelled"
    saga_recover(now=later())
    saga = _reload(saga)
    assert saga.state == "cancelled" and saga.compensate_to == ""
    assert stock(product) == (10, 0) and held(saga.public_id) == 0
    assert payment_intent_retrieve(intent_id=saga.payment_intent_id).status == "canceled"
    assert Order.objects.get(pk=saga.order_id).status == "cancelled"
    assert charges(stripe_emulator) == 0
    invariants_hold()


def _paid_behind_our_back(stripe_emulator, saga: CheckoutSaga) -> None:  # noqa: ANN001
    """The buyer's card is charged on Stripe's side without our confirm (a client-side confirm with Stripe.js
    of the intent ``/payment-intent`` gave it)."""
    intent_id = checkout_payment_intent(saga_id=saga.pk).payment_intent_id
    stripe_emulator.client().v1.payment_intents.confirm(intent_id, params={"payment_method": "pm_card_visa"})


@pytest.mark.parametrize("when", ["before", "after"])
def test_crash_around_the_refund_still_refunds_exactly_once(stripe_emulator, when):
    product = make_product(on_hand=2)
    saga = _start(_cart(product))
    _paid_behind_our_back(stripe_emulator, saga)
    # The hold lapsed and someone else bought the stock: the paid order cannot be filled → refund.
    reservation_release(holder=saga.public_id, status="EXPIRED")
    _start(_cart(product))
    crash_points.add(f"refund:{when}")
    with pytest.raises(SimulatedCrash):
        saga_on_reservation_expired(saga.public_id)
    saga_recover(now=later())
    saga = _reload(saga)
    assert saga.state == "expired"
    assert charges(stripe_emulator) == 1 and refunds(stripe_emulator) == 1
    assert Order.objects.get(pk=saga.order_id).payment_status == "refunded"
    invariants_hold()


# --- step failures -------------------------------------------------------------------------------


def test_payment_intent_endpoint_failure_keeps_the_checkout_open_and_a_retry_gets_one_intent(stripe_emulator):
    product = make_product()
    saga = _start(_cart(product))
    stripe_emulator.add_fault("POST /v1/payment_intents", "lose_response", times=10)
    with pytest.raises(PaymentTransientError):
        checkout_payment_intent(saga_id=saga.pk)
    stripe_emulator.clear_faults()
    lost = _reload(saga)
    assert lost.state == "awaiting_payment" and lost.step == "create_payment_intent"
    assert lost.step_status == "indeterminate" and lost.payment_intent_id == ""
    assert len(intents_of_order(stripe_emulator, saga.order.public_id)) == 1  # Stripe made it; we never heard
    again = checkout_payment_intent(saga_id=saga.pk)
    assert intents_of_order(stripe_emulator, saga.order.public_id) == [again.payment_intent_id]
    _finish(saga)
    assert intents_of_order(stripe_emulator, saga.order.public_id) == [again.payment_intent_id]
    invariants_hold()


def test_lost_create_and_confirm_response_is_settled_in_the_same_request(stripe_emulator, settings):
    """The create-and-confirm's answer is lost (stripe-python does not retry): the saga replays the same
    call with the same key and gets the intent the first one made, never a second."""
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    product = make_product()
    saga = _start(_cart(product))
    stripe_emulator.add_fault("POST /v1/payment_intents", "lose_response", times=1)
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa").state == "confirmed"
    assert charges(stripe_emulator) == 1
    assert intents_of_order(stripe_emulator, saga.order.public_id) == [_reload(saga).payment_intent_id]
    invariants_hold()


def test_unknown_charge_outcome_stays_indeterminate_until_stripe_answers(stripe_emulator):
    product = make_product()
    saga = _start(_cart(product))
    stripe_emulator.add_fault("POST /v1/payment_intents", "lose_response", times=10)
    with pytest.raises(PaymentTransientError):
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa")
    assert _reload(saga).step_status == "indeterminate"
    stripe_emulator.clear_faults()
    saga_recover(now=later())
    assert _reload(saga).state == "confirmed"
    assert charges(stripe_emulator) == 1
    assert intents_of_order(stripe_emulator, saga.order.public_id) == [_reload(saga).payment_intent_id]
    invariants_hold()


def test_charge_that_never_reached_stripe_is_sent_once_on_retry(stripe_emulator):
    product = make_product()
    saga = _start(_cart(product))
    stripe_emulator.add_fault("POST /v1/payment_intents", "http_500", times=10)
    with pytest.raises(PaymentTransientError):
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa")
    stripe_emulator.clear_faults()
    assert _reload(saga).state == "awaiting_payment" and charges(stripe_emulator) == 0
    assert intents_of_order(stripe_emulator, saga.order.public_id) == []
    _finish(saga)  # the buyer's retry replays the attempt first: one intent, one charge
    assert charges(stripe_emulator) == 1 and len(intents_of_order(stripe_emulator, saga.order.public_id)) == 1
    invariants_hold()


def test_paid_but_stock_gone_is_refunded_automatically(stripe_emulator):
    product = make_product(on_hand=2)
    saga = _start(_cart(product))
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_threeDSecure2Required").state == "requires_action"
    reservation_release(holder=saga.public_id, status="EXPIRED")
    _start(_cart(product))  # someone else takes both units
    saga = _reload(saga)  # the first charge recorded the intent it created
    stripe_emulator.authenticate(saga.payment_intent_id)
    intent_listeners_notify(intent=payment_intent_retrieve(intent_id=saga.payment_intent_id), source="webhook")
    saga = _reload(saga)
    assert saga.state == "failed"
    assert charges(stripe_emulator) == 1 and refunds(stripe_emulator) == 1
    assert Order.objects.get(pk=saga.order_id).payment_status == "refunded"
    invariants_hold()


def test_refund_failure_is_retried_by_recovery(stripe_emulator):
    product = make_product(on_hand=2)
    saga = _start(_cart(product))
    _paid_behind_our_back(stripe_emulator, saga)
    reservation_release(holder=saga.public_id, status="EXPIRED")
    _start(_cart(product))
    stripe_emulator.add_fault("POST /v1/refunds", "http_500", times=10)
    with pytest.raises(PaymentTransientError):  # compensation stops at the refund
        saga_on_reservation_expired(saga.public_id)
    assert _reload(saga).compensate_to == "expired" and refunds(stripe_emulator) == 0
    stripe_emulator.clear_faults()
    saga_recover(now=later())
    assert _reload(saga).state == "expired" and refunds(stripe_emulator) == 1
    invariants_hold()


# --- time --------------------------------------------------------------------------------------------


def test_expiry_before_paying_costs_stripe_nothing(stripe_emulator, settings):
    settings.CARTFLOW_RESERVATION_TTL_SECONDS = 1
    product = make_product()
    stripe_requests = stripe_request_counter(stripe_emulator)
    saga = _start(_cart(product))
    assert reservations_release_expired(now=later()) == [saga.public_id]
    saga = _reload(saga)
    assert saga.state == "expired" and stock(product) == (10, 0)
    assert saga.payment_intent_id == "" and stripe_requests() == 0
    assert Order.objects.get(pk=saga.order_id).status == "cancelled"
    invariants_hold()


def test_expiry_after_a_decline_cancels_the_intent(stripe_emulator, settings):
    settings.CARTFLOW_RESERVATION_TTL_SECONDS = 1
    product = make_product()
    saga = _start(_cart(product))
    with pytest.raises(Exception) as declined:
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_chargeDeclined")
    assert declined.value.code == "payment_declined"
    assert reservations_release_expired(now=later()) == [saga.public_id]
    saga = _reload(saga)
    assert saga.state == "expired" and stock(product) == (10, 0)
    assert payment_intent_retrieve(intent_id=saga.payment_intent_id).status == "canceled"
    with pytest.raises(Exception) as exc:
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa")
    assert exc.value.code == "reservation_expired"
    invariants_hold()


def test_expiry_while_in_three_d_secure_extends_the_hold(stripe_emulator):
    product = make_product()
    saga = _start(_cart(product))
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_threeDSecure2Required").state == "requires_action"
    assert reservations_release_expired(now=later(minutes=20)) == []
    assert held(saga.public_id) == 2
    saga = _reload(saga)  # the first charge recorded the intent it created
    stripe_emulator.authenticate(saga.payment_intent_id)
    intent_listeners_notify(intent=payment_intent_retrieve(intent_id=saga.payment_intent_id), source="webhook")
    assert _reload(saga).state == "confirmed"
    invariants_hold()


def test_expired_hold_but_paid_is_confirmed_when_stock_is_still_there(stripe_emulator):
    product = make_product()
    saga = _start(_cart(product))
    _paid_behind_our_back(stripe_emulator, saga)
    reservations_release_expired(now=later(minutes=20))  # the sweep expires the hold, the listener compensates
    saga = _reload(saga)
    assert saga.state == "confirmed" and stock(product) == (8, 0)
    assert charges(stripe_emulator) == 1 and refunds(stripe_emulator) == 0
    invariants_hold()


@pytest.mark.django_db  # not transactional: sees the rows the data migration created
def test_beat_schedules_exist():
    from django_celery_beat.models import PeriodicTask

    assert set(PeriodicTask.objects.filter(name__startswith="orders:").values_list("task", flat=True)) == {
        "orders.tasks.recover_sagas_task",
        "orders.tasks.outbox_sweep_task",
        "orders.tasks.webhook_sweep_task",
        "orders.tasks.authorizations_settle_task",
    }


def test_recover_sagas_command_finishes_a_crashed_charge(stripe_emulator, settings):
    from django.core.management import call_command

    settings.CARTFLOW_SAGA_LEASE_SECONDS = 0  # the crashed process's lease lapses at once
    product = make_product()
    saga = _start(_cart(product))
    crash_points.add("charge:after")
    with pytest.raises(SimulatedCrash):
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa")
    call_command("recover_sagas")
    assert _reload(saga).state == "fulfilled" and charges(stripe_emulator) == 1
    invariants_hold()


def test_the_checkout_is_settled_for_its_intent_only_once_confirmed(stripe_emulator):
    """payments skips re-fetching a ``payment_intent.succeeded`` only when this says the checkout is done."""
    saga = _start(_cart(make_product()))
    intent_id = checkout_payment_intent(saga_id=saga.pk).payment_intent_id
    assert not saga_settled_for_intent(intent_id, "succeeded")  # awaiting payment: the webhook may matter
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa").state == "confirmed"
    assert saga_settled_for_intent(intent_id, "succeeded")
    assert not saga_settled_for_intent(intent_id, "canceled")
    assert not saga_settled_for_intent("pi_unknown", "succeeded")
    # A confirmed checkout being compensated (an operator refund in progress) is not settled either.
    CheckoutSaga.objects.filter(pk=saga.pk).update(compensate_to="failed")
    assert not saga_settled_for_intent(intent_id, "succeeded")
