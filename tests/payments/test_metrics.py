"""Payments metrics (payments/metrics.py, payments/budget.py): Stripe operations by outcome, request latency,
budget waits, and webhooks received and processed, against the emulator and real Redis."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from payments import budget as stripe_budget
from payments.errors import PaymentMethodInvalid, PaymentProviderBusy, PaymentTransientError
from payments.gateway import (
    payment_intent_confirm,
    payment_intent_create,
    payment_intent_create_and_confirm,
    payment_intent_retrieve,
)
from payments.models import WebhookEvent
from payments.webhooks.handlers import webhook_event_park, webhook_event_process
from stripe_emulator import sign
from tests.support.metrics import Snapshot

pytestmark = pytest.mark.django_db(transaction=True)

CALLS = "cartflow_stripe_calls_total"
REQUESTS = "cartflow_stripe_request_seconds_count"
SECRET = "whsec_test_metrics"


@pytest.fixture(autouse=True)
def _fresh_budget(redis_client):
    stripe_budget._outage.update(until=0.0, logged=False)
    yield
    stripe_budget._outage.update(until=0.0, logged=False)


def _order() -> str:
    return f"ord_{uuid.uuid4().hex[:12]}"


def _intent_args(order_id: str) -> dict:
    return {"order_id": order_id, "checkout_id": "chk_metrics", "amount": 1000, "currency": "usd"}


def test_each_stripe_operation_is_counted_once_with_its_outcome_and_each_request_timed(stripe_emulator):
    snapshot = Snapshot()
    intent = payment_intent_create(**_intent_args(_order()))
    payment_intent_retrieve(intent_id=intent.intent_id)
    declined = payment_intent_create_and_confirm(
        **_intent_args(_order()), attempt=1, payment_method="pm_card_chargeDeclined"
    )
    assert declined.declined
    with pytest.raises(PaymentMethodInvalid):
        payment_intent_confirm(order_id=_order(), intent_id=intent.intent_id, attempt=1, payment_method="pm_nope")
    assert {
        (operation, outcome): snapshot.change(CALLS, operation=operation, outcome=outcome)
        for operation, outcome in [
            ("create", "ok"),
            ("retrieve", "ok"),
            ("create_confirm", "declined"),
            ("confirm", "refused"),
        ]
    } == {("create", "ok"): 1, ("retrieve", "ok"): 1, ("create_confirm", "declined"): 1, ("confirm", "refused"): 1}
    assert snapshot.change(REQUESTS, operation="create") == 1
    assert snapshot.change(REQUESTS, operation="retrieve") == 1
    assert snapshot.change("cartflow_stripe_request_seconds_sum", operation="create") > 0


def test_stripe_away_is_unavailable_with_every_retry_timed(stripe_emulator, settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 2
    stripe_emulator.add_fault("POST /v1/payment_intents", "http_500", times=3)  # the call and both retries
    snapshot = Snapshot()
    with pytest.raises(PaymentTransientError):
        payment_intent_create(**_intent_args(_order()))
    assert snapshot.change(CALLS, operation="create", outcome="unavailable") == 1
    assert snapshot.change(REQUESTS, operation="create") == 3


def test_no_budget_is_busy_nothing_sent_and_the_wait_counted(stripe_emulator, settings):
    settings.CARTFLOW_STRIPE_RATE = 0.5  # one token per 2 s: none comes within the wait
    settings.CARTFLOW_STRIPE_WAIT_SECONDS = 0.3
    for _ in range(int(stripe_budget.burst(0.5))):
        stripe_budget.spend()  # the full bucket, emptied
    snapshot = Snapshot()
    with pytest.raises(PaymentProviderBusy):
        payment_intent_create(**_intent_args(_order()))
    assert snapshot.change(CALLS, operation="create", outcome="busy") == 1
    assert snapshot.change(REQUESTS, operation="create") == 0
    assert snapshot.change("cartflow_stripe_budget_busy_total", priority="buyer") == 1


def test_a_budget_wait_is_counted_with_its_seconds_and_a_full_bucket_waits_for_nothing(stripe_emulator, settings):
    settings.CARTFLOW_STRIPE_RATE = 20.0  # a token every 50 ms, 5 in the bucket
    snapshot = Snapshot()
    stripe_budget.spend()
    assert snapshot.change("cartflow_stripe_budget_waits_total", priority="buyer") == 0
    for _ in range(int(stripe_budget.burst(20.0))):
        stripe_budget.spend()  # the last one finds the bucket empty and waits for the refill
    assert snapshot.change("cartflow_stripe_budget_waits_total", priority="buyer") >= 1
    assert snapshot.change("cartflow_stripe_budget_wait_seconds_sum", priority="buyer") > 0.01
    assert snapshot.change("cartflow_stripe_budget_wait_seconds_count", priority="buyer") == 1 + stripe_budget.burst(
        20.0
    )


def _event(type_: str, **obj: str) -> str:
    return json.dumps({
        "id": f"evt_{uuid.uuid4().hex[:16]}", "object": "event", "type": type_, "created": int(time.time()),
        "data": {"object": obj},
    })  # fmt: skip


def _deliver(client, body: str, secret: str = SECRET):  # noqa: ANN001, ANN202
    signature = sign(body, secret, int(time.time()))
    return client.post(
        "/api/webhooks/stripe", data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )


def test_webhooks_are_counted_as_received_then_as_what_processing_made_of_them(client, stripe_emulator, settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.CELERY_TASK_ALWAYS_EAGER = False  # processing is driven below, one outcome at a time
    snapshot = Snapshot()
    other = _event("customer.created", id="cus_1", object="customer")
    assert _deliver(client, other).status_code == 200
    assert _deliver(client, other).status_code == 200  # Stripe delivers again
    assert _deliver(client, other, secret="whsec_someone_else").status_code == 400
    received = {
        o: snapshot.change("cartflow_webhooks_received_total", outcome=o) for o in ("new", "duplicate", "invalid")
    }
    assert received == {"new": 1, "duplicate": 1, "invalid": 1}

    intent = payment_intent_create(**_intent_args(_order()))
    paid = _event("payment_intent.succeeded", id=intent.intent_id, object="payment_intent", status="succeeded")
    assert _deliver(client, paid).status_code == 200
    event_ids = {t: e for e, t in WebhookEvent.objects.values_list("event_id", "type")}
    webhook_event_process(event_id=event_ids["customer.created"])
    stripe_emulator.add_fault("GET /v1/payment_intents/*", "http_500", times=3)
    with pytest.raises(PaymentTransientError):
        webhook_event_process(event_id=event_ids["payment_intent.succeeded"])  # the re-fetch fails: retried later
    webhook_event_park(event_id=event_ids["payment_intent.succeeded"], error="retries exhausted")
    processed = {
        o: snapshot.change("cartflow_webhooks_processed_total", outcome=o)
        for o in ("processed", "ignored", "retried", "failed", "parked")
    }
    assert processed == {"processed": 0, "ignored": 1, "retried": 1, "failed": 0, "parked": 1}
