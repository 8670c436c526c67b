"""Outbound webhooks end to end: checkouts through the API, the REAL Celery worker fanning events out and
POSTing them to a real HTTP receiver (tests/support/receiver.py), retrying on its schedule.

The worker's delivery settings (tests/support/worker.py): retries 0.2-0.4 s, 0.4-0.8 s, 0.8-1.6 s, then at
most 2 s apart; 1 s timeouts.
"""

from __future__ import annotations

import json
import time

import pytest
from django.urls import reverse

from orders.models import Order, OutboundEvent, WebhookDelivery, WebhookEndpoint
from tests.support.receiver import documented_verifier
from tests.support.saga import guest_with_cart, make_product

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def checkout(product, *, timed: bool = False):  # noqa: ANN001, ANN201
    """A guest's checkout started and paid through the API; returns the confirm's body (and its seconds)."""
    client = guest_with_cart((product, 1))
    started = client.post("/api/checkout/start", {}, format="json")
    assert started.status_code == 201, started.content
    begun = time.monotonic()
    paid = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    took = time.monotonic() - begun
    assert paid.status_code == 200, paid.content
    return (paid.json(), took) if timed else paid.json()


def delivery_of(order_id: str, event_type: str) -> WebhookDelivery:
    return WebhookDelivery.objects.get(event__order__public_id=order_id, event__type=event_type)


def test_a_delivery_retried_after_a_500_keeps_its_event_id_and_a_valid_signature(
    celery_worker_process, stripe_emulator, webhook_receiver
):
    endpoint = WebhookEndpoint.objects.create(url=webhook_receiver.url, event_types=["order.confirmed"])
    webhook_receiver.answer(500)
    body = checkout(make_product())

    first, second = webhook_receiver.wait_for(2, event_type="order.confirmed")
    event = OutboundEvent.objects.get(order__public_id=body["orderId"], type="order.confirmed")
    assert first.event_id == second.event_id == event.public_id
    assert json.loads(first.body)["id"] == json.loads(second.body)["id"] == event.public_id
    assert first.body == second.body  # the same bytes, signed afresh each time
    verify = documented_verifier()
    for request in (first, second):
        assert verify(request.body, request.headers["cartflow-signature"], endpoint.secret), request.headers
    assert second.at - first.at >= 0.2  # the first retry's step (0.4 s, jittered in its upper half)

    delivery = delivery_of(body["orderId"], "order.confirmed")
    celery_worker_process.wait_for(lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == "delivered")
    assert list(delivery.attempt_log.values_list("number", "status_code")) == [(1, 500), (2, 200)]
    signed = [int(r.headers["cartflow-signature"].split(",")[0].removeprefix("t=")) for r in (first, second)]
    assert list(delivery.attempt_log.values_list("signed_at", flat=True)) == signed


def test_retries_back_off_until_the_receiver_answers(celery_worker_process, stripe_emulator, webhook_receiver):
    WebhookEndpoint.objects.create(url=webhook_receiver.url, event_types=["order.confirmed"])
    webhook_receiver.answer(500, 502, 503)
    body = checkout(make_product())

    requests = webhook_receiver.wait_for(4, event_type="order.confirmed", timeout=30)
    gaps = [b.at - a.at for a, b in zip(requests, requests[1:], strict=False)]
    # Never sooner than the lower half of each step: 0.2, 0.4, 0.8 s.
    assert all(gap >= low for gap, low in zip(gaps, (0.2, 0.4, 0.8), strict=True)), gaps
    assert len({r.event_id for r in requests}) == 1
    delivery = delivery_of(body["orderId"], "order.confirmed")
    celery_worker_process.wait_for(lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == "delivered")
    assert list(delivery.attempt_log.values_list("status_code", flat=True)) == [500, 502, 503, 200]


def test_resend_from_admin_delivers_the_same_event_again(
    celery_worker_process, stripe_emulator, webhook_receiver, client, django_user_model
):
    WebhookEndpoint.objects.create(url=webhook_receiver.url, event_types=["order.fulfilled"])
    body = checkout(make_product())
    [delivered] = webhook_receiver.wait_for(1, event_type="order.fulfilled")
    delivery = delivery_of(body["orderId"], "order.fulfilled")
    celery_worker_process.wait_for(lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == "delivered")

    staff = django_user_model.objects.create_superuser(username="ops", password="pw", email="ops@example.com")
    client.force_login(staff)
    response = client.post(
        reverse("admin:orders_webhookdelivery_changelist"),
        {"action": "resend", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert response.status_code == 200 and b"queued to be sent again" in response.content
    _, again = webhook_receiver.wait_for(2, event_type="order.fulfilled")
    assert again.event_id == delivered.event_id and again.body == delivered.body
    assert documented_verifier()(again.body, again.headers["cartflow-signature"], delivery.endpoint.secret)
    celery_worker_process.wait_for(lambda: WebhookDelivery.objects.get(pk=delivery.pk).attempts == 2)


def test_a_dead_endpoint_never_slows_a_checkout(celery_worker_process, stripe_emulator, webhook_receiver, settings):
    # In this process a delivery would wait 30 s for the receiver: a confirm that delivered inline would show it.
    settings.CARTFLOW_WEBHOOK_DELIVERY_TIMEOUT_SECONDS = 30
    webhook_receiver.hang(60)  # reads each request, never answers
    WebhookEndpoint.objects.create(url=webhook_receiver.url)
    body, took = checkout(make_product(), timed=True)

    assert took < 5, took
    # The worker fulfils the order while its deliveries time out (1 s) and are retried.
    celery_worker_process.wait_for(lambda: Order.objects.get(public_id=body["orderId"]).status == "fulfilled")
    webhook_receiver.wait_for(1, event_type="order.confirmed")
    delivery = delivery_of(body["orderId"], "order.confirmed")
    celery_worker_process.wait_for(lambda: delivery.attempt_log.filter(error__contains="Timeout").exists())
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "pending"
