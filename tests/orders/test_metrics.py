"""Checkout metrics (orders/metrics.py, orders/backlog.py): each fact counted once, where the saga knows it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from cart.identity import cart_ref_for_token
from inventory.errors import InsufficientStock
from inventory.services import reservation_release, reservations_release_expired
from orders.models import CheckoutSaga, Outbox
from orders.saga.driver import checkout_cancel, checkout_confirm, checkout_start
from orders.saga.listeners import saga_on_reservation_expired
from payments.gateway import payment_intent_retrieve
from payments.hooks import intent_listeners_notify
from tests.support.metrics import Snapshot
from tests.support.saga import guest_with_cart, later, make_product

pytestmark = pytest.mark.django_db(transaction=True)

CHECKOUTS = "cartflow_checkouts_total"
UNDOS = "cartflow_saga_compensations_total"


def _cart(product, quantity: int = 1) -> str:  # noqa: ANN001
    client = guest_with_cart((product, quantity))
    return cart_ref_for_token(client._credentials["HTTP_X_CART_TOKEN"]).key


def _start(product, quantity: int = 1) -> CheckoutSaga:  # noqa: ANN001
    saga, created = checkout_start(cart_key=_cart(product, quantity))
    assert created
    return saga


def _outcomes(snapshot: Snapshot) -> dict[str, float]:
    return {
        o: snapshot.change(CHECKOUTS, outcome=o) for o in ("started", "confirmed", "failed", "expired", "cancelled")
    }


def _undos(snapshot: Snapshot) -> dict[str, float]:
    steps = ("refund", "cancel_payment_intent", "cancel_order", "release")
    return {step: snapshot.change(UNDOS, step=step) for step in steps if snapshot.change(UNDOS, step=step)}


def test_a_paid_checkout_counts_started_and_confirmed_once(stripe_emulator):
    product = make_product()
    snapshot = Snapshot()
    saga = _start(product)
    assert checkout_start(cart_key=saga.cart_key)[1] is False  # the same checkout again: not a second start
    with pytest.raises(Exception) as declined:
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_chargeDeclined")
    assert declined.value.code == "payment_declined"  # a decline ends nothing: the checkout stays open
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa").state == "confirmed"
    assert _outcomes(snapshot) == {"started": 1, "confirmed": 1, "failed": 0, "expired": 0, "cancelled": 0}
    assert _undos(snapshot) == {}


def test_a_cancelled_checkout_counts_its_undos(stripe_emulator):
    saga = _start(make_product())
    snapshot = Snapshot()
    checkout_cancel(saga_id=saga.pk)
    checkout_cancel(saga_id=saga.pk)  # already cancelled: nothing more happens, nothing more is counted
    assert _outcomes(snapshot)["cancelled"] == 1
    assert _undos(snapshot) == {"cancel_order": 1, "release": 1}  # no PaymentIntent: nothing to cancel at Stripe


def test_an_expired_checkout_after_a_decline_cancels_its_intent_and_counts_expired(stripe_emulator, settings):
    settings.CARTFLOW_RESERVATION_TTL_SECONDS = 1
    saga = _start(make_product())
    with pytest.raises(Exception):  # noqa: B017, PT011 - declined: the PaymentIntent now exists
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_chargeDeclined")
    snapshot = Snapshot()
    assert reservations_release_expired(now=later()) == [saga.public_id]
    assert _outcomes(snapshot) == {"started": 0, "confirmed": 0, "failed": 0, "expired": 1, "cancelled": 0}
    assert _undos(snapshot) == {"cancel_payment_intent": 1, "cancel_order": 1, "release": 1}


def test_a_start_without_stock_counts_started_and_failed(stripe_emulator):
    product = make_product(on_hand=1)
    late = _cart(product)
    _start(product)  # someone else holds the unit now
    snapshot = Snapshot()
    with pytest.raises(InsufficientStock):
        checkout_start(cart_key=late)
    assert _outcomes(snapshot) == {"started": 1, "confirmed": 0, "failed": 1, "expired": 0, "cancelled": 0}
    assert _undos(snapshot) == {"release": 1}


def test_paid_after_the_stock_went_is_refunded_and_counted_failed(stripe_emulator):
    product = make_product(on_hand=1)
    saga = _start(product)
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_threeDSecure2Required").state == "requires_action"
    reservation_release(holder=saga.public_id, status="EXPIRED")
    _start(product)  # someone else takes the unit
    saga = CheckoutSaga.objects.get(pk=saga.pk)
    snapshot = Snapshot()
    stripe_emulator.authenticate(saga.payment_intent_id)
    intent_listeners_notify(intent=payment_intent_retrieve(intent_id=saga.payment_intent_id), source="webhook")
    saga_on_reservation_expired(saga.public_id)  # a late expiry event changes nothing and counts nothing
    assert CheckoutSaga.objects.get(pk=saga.pk).state == "failed"
    assert _outcomes(snapshot)["failed"] == 1 and _outcomes(snapshot)["confirmed"] == 0
    assert _undos(snapshot)["refund"] == 1


def _gauges(client) -> dict[str, float]:  # noqa: ANN001
    text = client.get("/metrics").content.decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("cartflow_sagas_stuck", "cartflow_outbox_lag_seconds")
    }


def test_stuck_sagas_and_the_outbox_lag_are_read_when_metrics_is_scraped(client, stripe_emulator):
    assert _gauges(client) == {"cartflow_sagas_stuck": 0, "cartflow_outbox_lag_seconds": 0}
    healthy, crashed = _start(make_product()), _start(make_product())
    # A process died holding the lease half-way: recover_sagas would pick it up, so it is stuck.
    CheckoutSaga.objects.filter(pk=crashed.pk).update(
        lease_owner="gone:1", lease_expires_at=timezone.now() - timedelta(seconds=5)
    )
    old = Outbox.objects.create(event_type="order.confirmed", payload={"checkoutId": healthy.public_id})
    Outbox.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(seconds=120))
    Outbox.objects.create(event_type="order.confirmed", payload={"checkoutId": healthy.public_id})
    gauges = _gauges(client)
    assert gauges["cartflow_sagas_stuck"] == 1
    assert 120 <= gauges["cartflow_outbox_lag_seconds"] < 180
    Outbox.objects.update(processed_at=timezone.now())
    assert _gauges(client)["cartflow_outbox_lag_seconds"] == 0


def test_a_scrape_costs_the_database_two_small_reads(client, django_assert_num_queries):
    with django_assert_num_queries(5) as captured:
        assert client.get("/metrics").status_code == 200
    begin, timeout, stuck, outbox, commit = (q["sql"] for q in captured.captured_queries)
    assert (begin, commit) == ("BEGIN", "COMMIT")
    assert timeout.startswith("SET LOCAL statement_timeout")
    assert stuck.startswith("SELECT COUNT(*)") and "orders_checkoutsaga" in stuck
    assert outbox.endswith("LIMIT 1") and "orders_outbox" in outbox
