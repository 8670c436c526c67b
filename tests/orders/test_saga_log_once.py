"""The saga log holds each event once (orders/saga/persistence.py, ``log_once``): a decline, or a 3-D Secure
wait, that the confirm's answer reported is not logged again when the webhook, reconciliation or recovery
brings the same news; a later attempt is a new event, with its own rows and its attempt number."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from rest_framework.test import APIClient

from orders.models import CheckoutSaga
from orders.saga.driver import saga_resume
from payments.gateway import payment_intent_retrieve
from payments.hooks import intent_listeners_notify
from payments.models import WebhookEvent
from payments.webhooks.handlers import webhook_event_process
from stripe_emulator import sign
from tests.support.saga import charges, guest_with_cart, invariants_hold, make_product

pytestmark = pytest.mark.django_db(transaction=True)


def _confirm(client: APIClient, checkout_id: str, pm: str):  # noqa: ANN202
    return client.post("/api/checkout/confirm", {"checkoutId": checkout_id, "paymentMethodId": pm}, format="json")


def _deliver_webhooks(emulator, types: set[str]) -> int:  # noqa: ANN001
    """POST the emulator's events of ``types`` to our endpoint, signed as Stripe does, and process each as the
    worker would. Returns how many were processed."""
    intake = APIClient()
    for event in emulator.events():
        if event["type"] not in types:
            continue
        body = json.dumps(event)
        signature = sign(body, emulator.server.webhook_secret, int(time.time()))
        response = intake.post("/api/webhooks/stripe", data=body, content_type="application/json",
                               HTTP_STRIPE_SIGNATURE=signature)  # fmt: skip
        assert response.status_code == 200, response.content
    stored = WebhookEvent.objects.filter(type__in=types)
    for event_id in stored.values_list("event_id", flat=True):
        assert webhook_event_process(event_id=event_id).status == WebhookEvent.PROCESSED
    return stored.count()


def _rows(saga_public_id: str) -> Counter:
    saga = CheckoutSaga.objects.get(public_id=saga_public_id)
    return Counter((s.step, s.outcome, s.details.get("attempt")) for s in saga.log.all())


def test_a_decline_seen_by_the_answer_the_webhook_and_reconciliation_is_logged_once(stripe_emulator):
    client = guest_with_cart((make_product(), 1))
    start = client.post("/api/checkout/start", {}, format="json").json()
    assert _confirm(client, start["checkoutId"], "pm_card_chargeDeclined").status_code == 402

    assert _deliver_webhooks(stripe_emulator, {"payment_intent.payment_failed"}) == 1
    saga = CheckoutSaga.objects.get(public_id=start["checkoutId"])
    # Stripe delivers it again (an event may come more than once); staff re-process it from the admin.
    [event_id] = WebhookEvent.objects.filter(type="payment_intent.payment_failed").values_list("event_id", flat=True)
    assert webhook_event_process(event_id=event_id, force=True).status == WebhookEvent.PROCESSED
    # Reconciliation hands the listener the same PaymentIntent again.
    intent_listeners_notify(intent=payment_intent_retrieve(intent_id=saga.payment_intent_id), source="reconcile")
    assert CheckoutSaga.objects.get(pk=saga.pk).state == "awaiting_payment"

    ok = _confirm(client, start["checkoutId"], "pm_card_visa")
    assert ok.status_code == 200 and ok.json()["status"] == "confirmed", ok.content

    rows = _rows(start["checkoutId"])
    charge_rows = {key: n for key, n in rows.items() if key[0] == "charge"}
    assert charge_rows == {
        ("charge", "about_to", 1): 1,
        ("charge", "failed", 1): 1,
        ("charge", "about_to", 2): 1,
        ("charge", "done", 2): 1,
    }
    [failed] = saga.log.filter(step="charge", outcome="failed")
    assert failed.details["declineCode"] == "generic_decline" and failed.details["charge"].startswith("ch_")
    assert all(n == 1 for n in rows.values()), rows
    assert charges(stripe_emulator) == 1
    invariants_hold()


def test_a_three_d_secure_wait_seen_again_by_the_webhook_and_recovery_is_logged_once(stripe_emulator):
    client = guest_with_cart((make_product(), 1))
    start = client.post("/api/checkout/start", {}, format="json").json()
    assert _confirm(client, start["checkoutId"], "pm_card_threeDSecure2Required").status_code == 202

    assert _deliver_webhooks(stripe_emulator, {"payment_intent.requires_action"}) == 1
    saga = CheckoutSaga.objects.get(public_id=start["checkoutId"])
    assert saga_resume(saga_id=saga.pk).state == "requires_action"  # recovery (or admin "resume") asks Stripe

    rows = _rows(start["checkoutId"])
    assert rows[("charge", "done", 1)] == 1, rows
    assert all(n == 1 for n in rows.values()), rows

    stripe_emulator.authenticate(saga.payment_intent_id)
    intent_listeners_notify(intent=payment_intent_retrieve(intent_id=saga.payment_intent_id), source="webhook")
    assert CheckoutSaga.objects.get(pk=saga.pk).state == "confirmed"
    # The buyer authenticated within attempt 1: "charge done" twice, each a different status.
    done = saga.log.filter(step="charge", outcome="done").order_by("id")
    assert [(d.details["status"], d.details["attempt"]) for d in done] == [("requires_action", 1), ("succeeded", 1)]
    invariants_hold()
