"""The intent listener (orders/saga/listeners.py) that webhooks and reconciliation call."""

from __future__ import annotations

import pytest

from orders.models import CheckoutSaga
from orders.saga import lease
from orders.saga.listeners import saga_on_intent
from payments.gateway import payment_intent_retrieve
from payments.hooks import NotKnownYet
from tests.support.saga import guest_with_cart, invariants_hold, make_product

pytestmark = pytest.mark.django_db(transaction=True)


def test_news_for_a_checkout_another_process_is_driving_is_retried_later_not_dropped(stripe_emulator):
    """A webhook that lands while another process holds the checkout's lease (a request mid-confirm, or one
    on a host that died) must come back later: payments retries NotKnownYet, but treats anything else as a
    bug and parks the event, which left the checkout to recovery."""
    client = guest_with_cart((make_product(price=900), 1))
    start = client.post("/api/checkout/start", {}, format="json").json()
    intent_id = client.post(f"/api/checkout/{start['checkoutId']}/payment-intent").json()["paymentIntentId"]
    stripe_emulator.client().v1.payment_intents.confirm(intent_id, params={"payment_method": "pm_card_visa"})
    intent = payment_intent_retrieve(intent_id=intent_id)
    saga = CheckoutSaga.objects.get(public_id=start["checkoutId"])
    held = lease.acquire(saga.pk, owner="a-request-on-another-host")

    with pytest.raises(NotKnownYet):
        saga_on_intent(intent, "webhook")
    assert CheckoutSaga.objects.get(pk=saga.pk).state == "awaiting_payment"

    lease.release(held)
    saga_on_intent(intent, "webhook")
    assert CheckoutSaga.objects.get(pk=saga.pk).state == "confirmed"
    invariants_hold()
