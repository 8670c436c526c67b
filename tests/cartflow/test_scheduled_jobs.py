"""Scheduled work end to end: REAL Celery beat (the DatabaseScheduler, on the schedule the migrations
created) sends each job through the real broker to the real worker, and the job's effect shows in
PostgreSQL, Redis or the Stripe emulator.

Each test prepares the state its job repairs with the worker detached, then ``celery_beat_process``
(tests/support/beat.py) shortens only that job's interval to 1 s, disables the others (so the effect can
only come from this job) and starts beat. A task renamed in code but not in its PeriodicTask, a schedule
disabled or pointed at another task: beat sends nothing useful and the test fails.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from cart.identity import cart_ref_for_token
from inventory import flashsale_keys
from inventory.flashsale import flash_holders, flash_pool_state, flash_sale_start, flash_tokens_take
from inventory.models import Reservation
from orders.models import CheckoutSaga, OutboundEvent, Outbox, WebhookEndpoint
from orders.saga.crashpoints import SimulatedCrash, crash_points
from orders.saga.driver import checkout_confirm, checkout_payment_intent, checkout_start
from payments.gateway import payment_intent_retrieve
from payments.models import Payment
from tests.support.saga import charges, guest_with_cart, held, invariants_hold, make_product, refunds, stock

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The PeriodicTask names the migrations create (inventory 0003/0004, orders 0002/0005, payments 0002).
RELEASE_EXPIRED = "inventory: release expired reservations"
FLASH_POOL_SWEEP = "inventory: flash-sale pool sweep"
RECOVER_SAGAS = "orders: recover sagas"
OUTBOX_SWEEP = "orders: outbox sweep"
WEBHOOK_SWEEP = "orders: webhook deliveries sweep"
RECONCILE = "payments: reconcile with Stripe"
SETTLE_AUTHORIZATIONS = "orders: settle due authorizations"


def _checkout(product, quantity: int = 2, *, with_intent: bool = False) -> CheckoutSaga:  # noqa: ANN001
    """A started checkout (stock held), awaiting payment. ``with_intent``: its PaymentIntent created too, as
    a Stripe.js storefront does before paying (the start creates none)."""
    client = guest_with_cart((product, quantity))
    saga, created = checkout_start(cart_key=cart_ref_for_token(client._credentials["HTTP_X_CART_TOKEN"]).key)
    assert created and saga.state == "awaiting_payment" and not saga.payment_intent_id
    if with_intent:
        saga = checkout_payment_intent(saga_id=saga.pk)
        assert saga.payment_intent_id and saga.state == "awaiting_payment"
    return saga


def _reload(saga: CheckoutSaga) -> CheckoutSaga:
    return CheckoutSaga.objects.get(pk=saga.pk)


def test_beat_releases_expired_reservations(stripe_emulator, celery_beat_process):
    product = make_product(on_hand=5)
    saga = _checkout(product, with_intent=True)  # so the expiry has an intent to cancel at Stripe
    # Only the hold is aged, not the checkout: saga recovery would not touch it, the release job must.
    Reservation.objects.filter(holder=saga.public_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert stock(product) == (5, 2)

    beat = celery_beat_process(RELEASE_EXPIRED)
    beat.wait_for(lambda: _reload(saga).state == "expired")
    assert stock(product) == (5, 0) and held(saga.public_id) == 0
    assert set(Reservation.objects.filter(holder=saga.public_id).values_list("status", flat=True)) == {"EXPIRED"}
    assert payment_intent_retrieve(intent_id=saga.payment_intent_id).status == "canceled"
    invariants_hold()


def test_beat_recovers_a_saga_whose_lease_lapsed(stripe_emulator, settings, celery_beat_process):
    settings.CARTFLOW_SAGA_LEASE_SECONDS = 0  # the crashed process's lease lapses at once
    product = make_product(on_hand=5)
    saga = _checkout(product)
    crash_points.add("charge:after")  # charged at Stripe, then the process dies holding the lease
    with pytest.raises(SimulatedCrash):
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa")
    crashed = _reload(saga)
    assert crashed.state == "awaiting_payment" and crashed.lease_owner

    beat = celery_beat_process(RECOVER_SAGAS)
    beat.wait_for(lambda: _reload(saga).state == "fulfilled")  # resumed, confirmed, fulfilled from the outbox
    assert charges(stripe_emulator) == 1 and refunds(stripe_emulator) == 0
    assert stock(product) == (3, 0)
    invariants_hold()


def test_beat_sweeps_an_outbox_event_whose_message_was_lost(stripe_emulator, celery_beat_process):
    product = make_product(on_hand=5)
    saga = _checkout(product)
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa").state == "confirmed"
    # Its on-commit message waits in the broker with no consumer; starting beat purges it (a lost message).
    [event] = Outbox.objects.filter(processed_at__isnull=True, payload__checkoutId=saga.public_id)
    # The sweep leaves events younger than 30 s to their own message (orders/services.py outbox_sweep).
    Outbox.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(minutes=1))

    beat = celery_beat_process(OUTBOX_SWEEP)
    beat.wait_for(lambda: Outbox.objects.filter(pk=event.pk, processed_at__isnull=False).exists())
    assert _reload(saga).state == "fulfilled"
    assert stock(product) == (3, 0) and charges(stripe_emulator) == 1
    invariants_hold()


def test_beat_sweeps_an_outbound_event_whose_message_was_lost(stripe_emulator, celery_beat_process, webhook_receiver):
    endpoint = WebhookEndpoint.objects.create(url=webhook_receiver.url, event_types=["order.confirmed"])
    product = make_product(on_hand=5)
    saga = _checkout(product)
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa").state == "confirmed"
    # Its fan-out message waits in the broker with no consumer; starting beat purges it (a lost message).
    [event] = OutboundEvent.objects.filter(order__public_id=saga.order.public_id, type="order.confirmed")
    # The sweep leaves events younger than 30 s to their own message (orders/outbound/delivery.py).
    OutboundEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(minutes=1))

    beat = celery_beat_process(WEBHOOK_SWEEP)
    [request] = webhook_receiver.wait_for(1, event_type="order.confirmed", timeout=30)
    assert request.event_id == event.public_id
    beat.wait_for(lambda: event.deliveries.filter(endpoint=endpoint, status="delivered").exists())


def test_beat_returns_the_flash_sale_token_of_a_gone_holder(celery_beat_process):
    product = make_product(on_hand=4)
    flash_sale_start(product_id=product.id)
    assert flash_tokens_take(holder="co_gone", lines=[(product.id, 1)]) is True
    # The holder took its token an hour ago and never reserved: its process is gone.
    client = flashsale_keys.redis_client()
    hold = json.loads(client.hget(flashsale_keys.HELD, "co_gone"))
    hold["at"] = time.time() - 3600
    client.hset(flashsale_keys.HELD, "co_gone", json.dumps(hold))
    assert flash_pool_state(product_id=product.id).free == 3

    beat = celery_beat_process(FLASH_POOL_SWEEP)
    beat.wait_for(lambda: "co_gone" not in {h.holder for h in flash_holders()})
    state = flash_pool_state(product_id=product.id)
    assert (state.free, state.inflight) == (4, 0)


def test_beat_reconciles_a_payment_that_drifted_from_stripe(stripe_emulator, celery_beat_process):
    product = make_product(on_hand=5)
    saga = _checkout(product, with_intent=True)
    # The buyer paid on Stripe's side (Stripe.js, on the checkout's intent); neither the confirm's answer
    # nor a webhook reached us.
    stripe_emulator.client().v1.payment_intents.confirm(
        saga.payment_intent_id, params={"payment_method": "pm_card_visa"}
    )
    assert Payment.objects.get(intent_id=saga.payment_intent_id).status == "requires_payment_method"

    beat = celery_beat_process(RECONCILE)
    beat.wait_for(lambda: Payment.objects.get(intent_id=saga.payment_intent_id).status == "succeeded")
    beat.wait_for(lambda: _reload(saga).state == "fulfilled")  # reconcile told the checkout, which finished
    assert charges(stripe_emulator) == 1 and stock(product) == (3, 0)
    invariants_hold()


def test_beat_captures_an_authorization_that_fulfilment_left_uncaptured(stripe_emulator, settings, celery_beat_process):
    settings.CARTFLOW_CAPTURE_METHOD = "manual"  # this process's confirm only authorizes
    product = make_product(on_hand=5)
    saga = _checkout(product)
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa").state == "confirmed"
    saga = _reload(saga)
    order_id = saga.order.public_id
    # Its fulfilment never ran (starting beat purges its message, and the outbox sweep is off), and the
    # authorization is older than CARTFLOW_CAPTURE_WITHIN_HOURS (144 h): Stripe would cancel it within a day.
    Payment.objects.filter(order_id=order_id).update(created=timezone.now() - timedelta(hours=145))
    assert payment_intent_retrieve(intent_id=saga.payment_intent_id).status == "requires_capture"

    beat = celery_beat_process(SETTLE_AUTHORIZATIONS)
    beat.wait_for(lambda: Payment.objects.get(order_id=order_id).status == "succeeded")
    assert payment_intent_retrieve(intent_id=saga.payment_intent_id).amount_received == 2 * product.price
    assert _reload(saga).state == "confirmed"  # captured; fulfilment is still the outbox's
    assert len(stripe_emulator.events("charge.captured")) == 1 and stock(product) == (3, 0)
    invariants_hold()


def test_every_migrated_schedule_has_a_test_here(beat_schedule_as_migrated):
    """A schedule added by a migration without a test above makes this fail (and cartflow/checks.py's list)."""
    from django_celery_beat.models import PeriodicTask

    from cartflow.checks import EXPECTED_SCHEDULES

    covered = {
        RELEASE_EXPIRED, FLASH_POOL_SWEEP, RECOVER_SAGAS, OUTBOX_SWEEP, WEBHOOK_SWEEP, RECONCILE, SETTLE_AUTHORIZATIONS
    }  # fmt: skip
    assert set(PeriodicTask.objects.values_list("name", flat=True)) == covered == set(EXPECTED_SCHEDULES)
