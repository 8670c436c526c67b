"""Why a saga is stuck and since when (orders/saga/stuck.py), for each reason, on sagas brought there through
the real saga code (crash points, the emulator's faults, payments' webhook service) in PostgreSQL; and the
admin's stuck list showing it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from cart.identity import cart_ref_for_token
from inventory.models import Reservation
from orders.models import CheckoutSaga
from orders.saga.crashpoints import SimulatedCrash, crash_points
from orders.saga.driver import checkout_cancel, checkout_confirm, checkout_payment_intent, checkout_start
from orders.saga.stuck import sagas_needing_attention, sagas_stuck, stuck_reasons
from payments.errors import PaymentTransientError
from payments.models import WebhookEvent
from payments.webhooks.handlers import webhook_event_park
from tests.support.saga import guest_with_cart, make_product

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_retries(settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 0


def _started() -> CheckoutSaga:
    client = guest_with_cart((make_product(), 1))
    saga, _ = checkout_start(cart_key=cart_ref_for_token(client._credentials["HTTP_X_CART_TOKEN"]).key)
    return saga


def _reason(saga: CheckoutSaga, **kwargs):  # noqa: ANN003, ANN202
    return stuck_reasons([CheckoutSaga.objects.get(pk=saga.pk)], **kwargs).get(saga.pk)


def _last_row_at(saga: CheckoutSaga, step: str, outcome: str):  # noqa: ANN202
    return saga.log.filter(step=step, outcome=outcome).order_by("-at", "-id").first().at


def _lapse_hold(saga: CheckoutSaga):  # noqa: ANN202
    past = timezone.now() - timedelta(seconds=5)
    CheckoutSaga.objects.filter(pk=saga.pk).update(expires_at=past)
    Reservation.objects.filter(holder=saga.public_id).update(expires_at=past)
    return past


def test_a_healthy_checkout_has_no_reason():
    saga = _started()
    assert _reason(saga) is None
    assert not sagas_needing_attention().filter(pk=saga.pk).exists()


def test_a_lease_that_lapsed_mid_step_says_which_step_since_the_lease_expiry(stripe_emulator):
    saga = _started()
    crash_points.add("create_payment_intent:before")
    with pytest.raises(SimulatedCrash):
        checkout_payment_intent(saga_id=saga.pk)
    crashed = CheckoutSaga.objects.get(pk=saga.pk)
    assert _reason(saga) is None  # the lease is still live: maybe the process is only slow

    after = crashed.lease_expires_at + timedelta(seconds=1)
    why = _reason(saga, now=after)
    assert why.code == "lease_lapsed" and why.since == crashed.lease_expires_at
    assert why.text == "lease lapsed mid create_payment_intent (about_to)"
    assert sagas_stuck(now=after).filter(pk=saga.pk).exists()


def test_a_hold_past_its_expiry_since_expires_at(stripe_emulator):
    saga = _started()
    past = _lapse_hold(saga)
    why = _reason(saga)
    assert why.code == "hold_expired" and why.since == past
    assert why.text == "hold past expiry while awaiting_payment"


def test_an_unknown_charge_outcome_since_its_last_log_row(stripe_emulator):
    saga = _started()
    stripe_emulator.add_fault("POST /v1/payment_intents", "lose_response", times=0)
    with pytest.raises(PaymentTransientError):
        checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa")
    stripe_emulator.clear_faults()
    why = _reason(saga)
    assert why.code == "charge_indeterminate"
    assert why.since == _last_row_at(saga, "charge", "indeterminate")
    assert "indeterminate, attempt 1" in why.text


def test_a_parked_webhook_of_its_payment_intent_since_the_event_arrived(stripe_emulator):
    saga = _started()
    intent_id = checkout_payment_intent(saga_id=saga.pk).payment_intent_id
    event = WebhookEvent.objects.create(
        event_id="evt_parked_1", type="payment_intent.succeeded", intent_id=intent_id, payload="{}"
    )
    WebhookEvent.objects.create(event_id="evt_other", type="payment_intent.succeeded", intent_id="pi_x", payload="{}")
    assert _reason(saga) is None  # received, not parked: the worker is on it
    webhook_event_park(event_id=event.event_id, error="NotKnownYet: retries exhausted")

    why = _reason(saga)
    assert why.code == "webhook_parked" and why.since == event.received_at
    assert why.text.startswith("webhook evt_parked_1 (payment_intent.succeeded) parked")
    assert sagas_needing_attention().filter(pk=saga.pk).exists()
    assert not sagas_stuck().filter(pk=saga.pk).exists()  # recovery cannot fix it; staff re-process it


def test_a_saga_flagged_for_a_human_since_its_step_with_the_error_code(stripe_emulator):
    saga = _started()
    CheckoutSaga.objects.filter(pk=saga.pk).update(
        requires_human=True, last_error_code="authorization_canceled", human_reason="Capture refused."
    )
    why = _reason(saga)
    assert why.code == "needs_human" and why.text == "needs a human (authorization_canceled): Capture refused."
    assert why.since == _last_row_at(saga, "create_order", "done")


def test_a_compensation_cut_short_is_left_half_way(stripe_emulator):
    saga = _started()
    checkout_payment_intent(saga_id=saga.pk)
    stripe_emulator.add_fault("POST /v1/payment_intents/*/cancel", "http_500", times=0)
    with pytest.raises(PaymentTransientError):
        checkout_cancel(saga_id=saga.pk)
    stripe_emulator.clear_faults()
    why = _reason(saga)
    assert why.code == "half_way" and why.text.startswith("compensating to cancelled")
    assert why.since == _last_row_at(saga, "cancel_payment_intent", "about_to")


def test_the_admin_stuck_list_says_why_and_since_when(client, django_user_model, stripe_emulator):
    staff = django_user_model.objects.create_superuser(username="ops", password="pw", email="ops@example.com")
    client.force_login(staff)
    expired, healthy = _started(), _started()
    past = _lapse_hold(expired)

    page = client.get(reverse("admin:orders_checkoutsaga_changelist"), {"stuck": "yes"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "column-why_stuck" in body and "column-stuck_since" in body
    assert "hold past expiry while awaiting_payment" in body
    assert past.isoformat(timespec="seconds") in body
    assert {s.public_id for s in page.context["cl"].result_list} == {expired.public_id}

    only = client.get(reverse("admin:orders_checkoutsaga_changelist"), {"stuck": "hold_expired"})
    assert {s.public_id for s in only.context["cl"].result_list} == {expired.public_id}
    none = client.get(reverse("admin:orders_checkoutsaga_changelist"), {"stuck": "lease_lapsed"})
    assert list(none.context["cl"].result_list) == []
    assert healthy.public_id not in body
