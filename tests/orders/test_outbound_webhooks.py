"""Outbound webhooks in one process: each event is written with the change it announces (in the saga's own
statement), its body is the order as the API shows it, and a delivery POSTs it signed to a real local HTTP
receiver, retried on anything but a 2xx on a bounded schedule. The worker's side: tests/e2e/."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import stripe
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from inventory.models import Reservation
from inventory.services import reservations_release_expired
from orders.models import CheckoutSaga, Order, OutboundEvent, WebhookDelivery, WebhookEndpoint
from orders.outbound.body import event_body
from orders.outbound.delivery import (
    outbound_event_fan_out,
    retry_delay,
    webhook_deliveries_sweep,
    webhook_delivery_attempt,
)
from orders.outbound.events import outbound_event_record
from orders.outbound.signing import signature_header
from orders.saga.listeners import saga_on_intent
from orders.services import outbox_process_pending
from payments.gateway import payment_intent_retrieve
from tests.support.receiver import documented_verifier
from tests.support.saga import guest_with_cart, make_product

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "whsec_test_outbound"


@pytest.fixture
def endpoint(webhook_receiver, settings):
    """The receiver as a configured endpoint (CARTFLOW_WEBHOOK_ENDPOINTS), fast retries."""
    settings.CARTFLOW_WEBHOOK_ENDPOINTS = [webhook_receiver.url]
    settings.CARTFLOW_WEBHOOK_SIGNING_SECRET = SECRET
    settings.CARTFLOW_WEBHOOK_DELIVERY_RETRY_BASE_SECONDS = 10
    settings.CARTFLOW_WEBHOOK_DELIVERY_TIMEOUT_SECONDS = 2
    return webhook_receiver


def started(product, quantity: int = 1):  # noqa: ANN001, ANN201
    client = guest_with_cart((product, quantity))
    response = client.post("/api/checkout/start", {}, format="json")
    assert response.status_code == 201, response.content
    return client, response.json()


def paid(product, quantity: int = 1):  # noqa: ANN001, ANN201
    client, body = started(product, quantity)
    response = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    assert response.status_code == 200, response.content
    return client, response.json()


def events(order_id: str) -> list[tuple[str, str]]:
    return list(OutboundEvent.objects.filter(order__public_id=order_id).order_by("id").values_list("type", "key"))


def deliver(event: OutboundEvent) -> WebhookDelivery:
    """Fan the event out and attempt its one delivery now (what the worker's tasks do)."""
    assert outbound_event_fan_out(event_id=event.pk) == 1
    delivery = WebhookDelivery.objects.get(event=event)
    webhook_delivery_attempt(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    event.refresh_from_db()
    return delivery


def make_due(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


# --- events are written with their change ----------------------------------------------------------------


def test_confirm_writes_order_confirmed_in_the_statement_that_confirms_the_order(stripe_emulator):
    product = make_product()
    client, body = started(product)
    with CaptureQueriesContext(connection) as ctx:
        response = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    assert response.status_code == 200, response.content
    [statement] = [q["sql"] for q in ctx.captured_queries if "orders_outboundevent" in q["sql"]]
    # One statement: the saga's version-checked UPDATE, the order confirmed, the outbox row, the event.
    assert statement.startswith("WITH") and "orders_checkoutsaga" in statement and "orders_outbox" in statement
    assert events(body["orderId"]) == [("order.confirmed", "order.confirmed")]
    event = OutboundEvent.objects.get(order__public_id=body["orderId"])
    assert event.order_snapshot["status"] == "confirmed" and event.public_id.startswith("evt_")


def test_the_body_is_the_order_as_the_api_shows_it_when_the_event_happened(stripe_emulator):
    product = make_product(price=1999)
    client, body = paid(product, 2)
    shown = client.get(f"/api/orders/{body['orderId']}").json()
    event = OutboundEvent.objects.get(order__public_id=body["orderId"], type="order.confirmed")
    outbox_process_pending()  # fulfilment: the order moves on, the confirmed event does not
    assert Order.objects.get(public_id=body["orderId"]).status == "fulfilled"
    document = json.loads(event_body(event))
    assert set(document) == {"id", "type", "createdAt", "data"}
    assert (document["id"], document["type"]) == (event.public_id, "order.confirmed")
    assert document["data"] == {"order": shown}
    assert shown["status"] == "confirmed" and shown["total"] == 3998 and len(shown["lines"]) == 1
    fulfilled = OutboundEvent.objects.get(order__public_id=body["orderId"], type="order.fulfilled")
    assert json.loads(event_body(fulfilled))["data"]["order"] == client.get(f"/api/orders/{body['orderId']}").json()


def test_each_transition_writes_its_event_once(stripe_emulator):
    product = make_product(on_hand=10)
    _, confirmed = paid(product)
    outbox_process_pending()
    outbox_process_pending()  # an at-least-once consumer running twice
    assert events(confirmed["orderId"]) == [
        ("order.confirmed", "order.confirmed"),
        ("order.fulfilled", "order.fulfilled"),
    ]

    client, cancelled = started(product)
    assert client.post(f"/api/checkout/{cancelled['checkoutId']}/cancel").status_code == 200
    assert events(cancelled["orderId"]) == [("order.cancelled", "order.cancelled")]
    assert OutboundEvent.objects.get(order__public_id=cancelled["orderId"]).order_snapshot["status"] == "cancelled"

    _, expiring = started(product)
    past = timezone.now() - timedelta(seconds=1)
    CheckoutSaga.objects.filter(public_id=expiring["checkoutId"]).update(expires_at=past)
    Reservation.objects.filter(holder=expiring["checkoutId"]).update(expires_at=past)
    reservations_release_expired()
    assert events(expiring["orderId"]) == [("checkout.expired", "checkout.expired")]


def test_a_decline_is_one_payment_failed_however_often_it_is_seen(stripe_emulator):
    product = make_product()
    client, body = started(product)
    declined = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_chargeDeclined"}, format="json")
    assert declined.status_code == 402, declined.content
    [(kind, key)] = events(body["orderId"])
    assert kind == "payment.failed" and key.startswith("payment.failed:")
    saga = Order.objects.get(public_id=body["orderId"]).saga
    saga_on_intent(payment_intent_retrieve(intent_id=saga.payment_intent_id), "webhook")  # Stripe's webhook
    assert len(events(body["orderId"])) == 1
    again = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_chargeDeclined"}, format="json")
    assert again.status_code == 402
    assert [k for k, _ in events(body["orderId"])] == ["payment.failed", "payment.failed"]  # a second charge
    assert client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json").status_code == 200
    assert [k for k, _ in events(body["orderId"])][-1] == "order.confirmed"


def test_outbound_event_record_writes_in_the_callers_transaction_once_per_key(stripe_emulator):
    product = make_product()
    _, body = paid(product)
    order = Order.objects.get(public_id=body["orderId"])
    with transaction.atomic():
        Order.objects.filter(pk=order.pk).update(amount_refunded=500)
        first = outbound_event_record(
            type="order.refunded", order=order, key="refund:1", data={"refund": {"amount": 500}}
        )
        assert outbound_event_record(type="order.refunded", order=order, key="refund:1") is None
    event = OutboundEvent.objects.get(pk=first)
    assert event.order_snapshot["amount_refunded"] == 500  # the row as the transaction left it
    document = json.loads(event_body(event))
    assert document["data"]["refund"] == {"amount": 500} and document["data"]["order"]["amountRefunded"] == 500

    with pytest.raises(transaction.TransactionManagementError), transaction.atomic():
        outbound_event_record(type="order.refunded", order=order, key="refund:2")
        raise transaction.TransactionManagementError("the change failed")
    assert not OutboundEvent.objects.filter(key="refund:2").exists()  # no change, no event
    with pytest.raises(ValueError, match="key"):
        outbound_event_record(type="order.refunded", order=order)
    with pytest.raises(ValueError, match="unknown"):
        outbound_event_record(type="order.teleported", order=order)


# --- delivery --------------------------------------------------------------------------------------------


def test_a_delivery_is_signed_over_the_exact_bytes_and_names_its_event(stripe_emulator, endpoint):
    _, body = paid(make_product())
    event = OutboundEvent.objects.get(order__public_id=body["orderId"])
    delivery = deliver(event)
    [request] = endpoint.received()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert request.method == "POST" and request.headers["content-type"] == "application/json"
    assert request.event_id == event.public_id == json.loads(request.body)["id"]
    assert request.body == event.body.encode()
    verify = documented_verifier()
    assert verify(request.body, request.headers["cartflow-signature"], SECRET)
    assert not verify(request.body + b" ", request.headers["cartflow-signature"], SECRET)
    assert not verify(request.body, request.headers["cartflow-signature"], "whsec_other")
    # Stripe's own verification code accepts it too (the same scheme).
    stripe.WebhookSignature.verify_header(request.body.decode(), request.headers["cartflow-signature"], SECRET, 300)


def test_the_documented_verifier_refuses_a_stale_or_malformed_header():
    verify = documented_verifier()
    body = b'{"id":"evt_1"}'
    stale = signature_header(body=body, secret=SECRET, timestamp=int(timezone.now().timestamp()) - 301)
    assert not verify(body, stale, SECRET)
    assert not verify(body, "v1=abc", SECRET) and not verify(body, "garbage", SECRET)


def test_a_500_is_retried_with_the_same_event_id_and_a_fresh_signature(stripe_emulator, endpoint):
    _, body = paid(make_product())
    event = OutboundEvent.objects.get(order__public_id=body["orderId"])
    endpoint.answer(500)
    before = timezone.now()
    delivery = deliver(event)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    wait = (delivery.next_attempt_at - before).total_seconds()
    assert 5 - 1 <= wait <= 10 + 1  # base 10 s: the first step, jittered in its upper half
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "not_due"  # an early task sends nothing
    make_due(delivery)
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "delivered"
    first, second = endpoint.received()
    assert first.event_id == second.event_id == event.public_id and first.body == second.body
    verify = documented_verifier()
    assert verify(first.body, first.headers["cartflow-signature"], SECRET)
    assert verify(second.body, second.headers["cartflow-signature"], SECRET)
    log = list(WebhookDelivery.objects.get(pk=delivery.pk).attempt_log.values_list("number", "status_code"))
    assert log == [(1, 500), (2, 200)]


def test_the_retry_schedule_grows_is_capped_and_gives_up_after_a_day(settings):
    settings.CARTFLOW_WEBHOOK_DELIVERY_RETRY_BASE_SECONDS = 30
    settings.CARTFLOW_WEBHOOK_DELIVERY_RETRY_MAX_SECONDS = 3600
    lows = [retry_delay(n, rng=lambda: 0.0) for n in range(1, 12)]
    highs = [retry_delay(n, rng=lambda: 1.0) for n in range(1, 12)]
    assert highs[:4] == [30, 60, 120, 240] and lows[:4] == [15, 30, 60, 120]
    assert highs[-1] == 3600 and lows[-1] == 1800 and highs == sorted(highs)
    # Within 24 h: at least one retry an hour once capped, and no more than a few dozen in all.
    for rng in (lambda: 0.0, lambda: 1.0):
        elapsed, attempts = 0.0, 1
        while elapsed + retry_delay(attempts, rng=rng) <= 24 * 3600:
            elapsed += retry_delay(attempts, rng=rng)
            attempts += 1
        assert 25 <= attempts <= 55, attempts


def test_a_failure_past_the_retry_window_parks_the_delivery(stripe_emulator, endpoint):
    _, body = paid(make_product())
    event = OutboundEvent.objects.get(order__public_id=body["orderId"])
    endpoint.answer(503)
    outbound_event_fan_out(event_id=event.pk)
    delivery = WebhookDelivery.objects.get(event=event)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(give_up_at=timezone.now() + timedelta(seconds=1))
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "parked"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.next_attempt_at, delivery.last_error) == ("parked", None, "HTTP 503")
    assert webhook_deliveries_sweep() == 0  # nothing due


def test_a_redirect_is_not_followed_and_counts_as_a_failure(stripe_emulator, endpoint):
    _, body = paid(make_product())
    endpoint.answer((302, {"Location": endpoint.url + "/elsewhere"}, b""))
    delivery = deliver(OutboundEvent.objects.get(order__public_id=body["orderId"]))
    assert (delivery.status, delivery.last_status_code) == ("pending", 302)
    assert [r.path for r in endpoint.received()] == ["/hooks"]


def test_only_a_short_head_of_the_answer_is_kept(stripe_emulator, endpoint):
    _, body = paid(make_product())
    endpoint.answer((200, {}, b"x" * 200_000))
    delivery = deliver(OutboundEvent.objects.get(order__public_id=body["orderId"]))
    [attempt] = delivery.attempt_log.all()
    assert delivery.status == "delivered" and attempt.response_head == "x" * 512


def test_a_timeout_or_a_refused_connection_is_a_failed_attempt(stripe_emulator, endpoint, settings):
    _, body = paid(make_product())
    settings.CARTFLOW_WEBHOOK_DELIVERY_TIMEOUT_SECONDS = 0.5
    endpoint.hang(3)
    delivery = deliver(OutboundEvent.objects.get(order__public_id=body["orderId"]))
    [attempt] = delivery.attempt_log.all()
    assert delivery.status == "pending" and attempt.status_code is None and "Timeout" in attempt.error
    assert attempt.duration_ms < 2500
    settings.CARTFLOW_WEBHOOK_ENDPOINTS = ["http://127.0.0.1:9/hooks"]  # discard port: nothing listens
    WebhookDelivery.objects.filter(pk=delivery.pk).update(url="http://127.0.0.1:9/hooks")
    make_due(delivery)
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "pending"
    assert "ConnectError" in WebhookDelivery.objects.get(pk=delivery.pk).last_error


def test_admin_endpoints_choose_their_types_and_sign_with_their_own_secret(stripe_emulator, webhook_receiver):
    only_fulfilled = WebhookEndpoint.objects.create(url=webhook_receiver.url, event_types=["order.fulfilled"])
    WebhookEndpoint.objects.create(url=webhook_receiver.url + "/off", active=False)
    _, body = paid(make_product())
    confirmed = OutboundEvent.objects.get(order__public_id=body["orderId"])
    assert outbound_event_fan_out(event_id=confirmed.pk) == 0  # neither takes order.confirmed
    outbox_process_pending()
    fulfilled = OutboundEvent.objects.get(order__public_id=body["orderId"], type="order.fulfilled")
    delivery = deliver(fulfilled)
    assert delivery.endpoint == only_fulfilled and delivery.status == "delivered"
    [request] = webhook_receiver.received()
    assert documented_verifier()(request.body, request.headers["cartflow-signature"], only_fulfilled.secret)
    # Deactivated: its pending retries stop.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="pending", next_attempt_at=timezone.now())
    WebhookEndpoint.objects.filter(pk=only_fulfilled.pk).update(active=False)
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "parked"
    assert len(webhook_receiver.received()) == 1


def test_without_endpoints_an_event_is_marked_fanned_out_and_never_rendered(stripe_emulator):
    _, body = paid(make_product())
    event = OutboundEvent.objects.get(order__public_id=body["orderId"])
    assert outbound_event_fan_out(event_id=event.pk) == 0
    event.refresh_from_db()
    assert event.fanned_out_at is not None and event.body == ""
    assert webhook_deliveries_sweep(now=timezone.now() + timedelta(minutes=5)) == 0


def test_the_sweep_hands_out_events_nobody_fanned_out_and_deliveries_due(stripe_emulator, endpoint):
    _, body = paid(make_product())
    event = OutboundEvent.objects.get(order__public_id=body["orderId"])
    assert webhook_deliveries_sweep() == 0  # a fresh event is the hand-off's, not yet the sweep's
    assert webhook_deliveries_sweep(now=timezone.now() + timedelta(minutes=1)) == 1
    outbound_event_fan_out(event_id=event.pk)
    assert webhook_deliveries_sweep() == 1  # its delivery is due


# --- admin -----------------------------------------------------------------------------------------------


def test_admin_lists_deliveries_with_attempts_and_resends_the_same_event(stripe_emulator, endpoint, staff):
    _, body = paid(make_product())
    event = OutboundEvent.objects.get(order__public_id=body["orderId"])
    endpoint.answer(500)
    delivery = deliver(event)
    make_due(delivery)
    webhook_delivery_attempt(delivery_id=delivery.pk)

    listing = staff.get(reverse("admin:orders_webhookdelivery_changelist"), {"q": body["orderId"]})
    assert listing.status_code == 200 and list(listing.context["cl"].result_list) == [delivery]
    page = staff.get(reverse("admin:orders_webhookdelivery_change", args=[delivery.pk]))
    assert page.status_code == 200
    assert [a.status_code for a in page.context["inline_admin_formsets"][0].formset.queryset] == [500, 200]
    endpoints = staff.get(reverse("admin:orders_webhookendpoint_changelist"))
    assert endpoints.status_code == 200 and endpoint.url.encode() in endpoints.content

    action = staff.post(
        reverse("admin:orders_webhookdelivery_changelist"),
        {"action": "resend", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert action.status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.next_attempt_at <= timezone.now()
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "delivered"
    assert {r.event_id for r in endpoint.received()} == {event.public_id} and len(endpoint.received()) == 3


def test_admin_adds_an_endpoint_with_chosen_types(staff, webhook_receiver):
    response = staff.post(
        reverse("admin:orders_webhookendpoint_add"),
        {"url": webhook_receiver.url, "active": "on", "event_types": ["order.refunded", "order.cancelled"],
         "secret": "whsec_mine", "description": "ERP"},
    )  # fmt: skip
    assert response.status_code == 302, response.content
    row = WebhookEndpoint.objects.get(url=webhook_receiver.url)
    assert (row.event_types, row.secret, row.active) == (["order.refunded", "order.cancelled"], "whsec_mine", True)
