"""Events and signed webhooks: every state change is an event, delivered, signed, retried and steerable."""

from __future__ import annotations

import time

import pytest
import stripe

from tests.stripe_emulator.support import Receiver

CREATE = {"amount": 3000, "currency": "usd", "metadata": {"order_id": "5"}}


@pytest.fixture
def client(emulator):
    return emulator.client()


def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_every_state_change_is_an_event_in_order(client, emulator, receiver):
    pi = client.v1.payment_intents.create(params=CREATE)
    with pytest.raises(stripe.CardError):
        client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa_chargeDeclined"})
    client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_threeDSecure2Required"})
    emulator.authenticate(pi.id, "succeed")
    client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 100})
    other = client.v1.payment_intents.create(params=CREATE)
    client.v1.payment_intents.cancel(other.id)
    expected = [
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
        "payment_intent.requires_action",
        "charge.succeeded",
        "payment_intent.succeeded",
        "refund.created",
        "charge.refunded",
        "payment_intent.created",
        "payment_intent.canceled",
    ]
    assert [e["type"] for e in emulator.events()] == expected
    assert emulator.wait_for_webhooks()
    assert receiver.types() == expected
    succeeded = emulator.events("payment_intent.succeeded")[0]
    assert succeeded["data"]["object"]["id"] == pi.id and succeeded["data"]["object"]["status"] == "succeeded"
    refunded = emulator.events("charge.refunded")[0]["data"]["object"]
    assert refunded["object"] == "charge" and refunded["amount_refunded"] == 100


def test_manual_capture_events(client, emulator):
    pi = client.v1.payment_intents.create(
        params={**CREATE, "capture_method": "manual", "confirm": True, "payment_method": "pm_card_visa"}
    )
    client.v1.payment_intents.capture(pi.id)
    assert [e["type"] for e in emulator.events()][1:] == [
        "charge.succeeded",
        "payment_intent.amount_capturable_updated",
        "charge.captured",
        "payment_intent.succeeded",
    ]


def test_events_api_retrieve_and_list(client, emulator):
    for _ in range(3):
        client.v1.payment_intents.create(params=CREATE, options={"idempotency_key": f"k{_}"})
    ids = [e["id"] for e in emulator.events()]
    event = client.v1.events.retrieve(ids[0])
    assert event.object == "event" and event.type == "payment_intent.created"
    assert event.request.idempotency_key == "k0" and event.request.id.startswith("req_")
    page = client.v1.events.list(params={"limit": 2})
    assert [e.id for e in page.data] == ids[::-1][:2] and page.has_more
    rest = client.v1.events.list(params={"limit": 2, "starting_after": page.data[-1].id})
    assert [e.id for e in rest.data] == ids[:1] and not rest.has_more
    assert client.v1.events.list(params={"type": "charge.succeeded"}).data == []


def test_webhooks_carry_a_signature_that_stripe_accepts(client, emulator, receiver):
    client.v1.payment_intents.create(params=CREATE)
    _wait_for(lambda: receiver.received)
    event, payload, header = receiver.received[0]
    assert header.startswith("t=") and ",v1=" in header
    verified = stripe.Webhook.construct_event(payload, header, emulator.secret)
    assert verified.id == event["id"] and verified.type == "payment_intent.created"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_wrong")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.replace("3000", "1"), header, emulator.secret)


def test_a_failing_receiver_gets_the_event_again_with_backoff(client, emulator):
    rec = Receiver(fail_first=2)
    emulator.set_webhook_url(rec.url)
    try:
        client.v1.payment_intents.create(params=CREATE)
        _wait_for(lambda: len(rec.received) == 3)
        assert len(set(rec.ids())) == 1
        assert emulator.wait_for_webhooks()
        attempts = [(d["attempt"], d["status"]) for d in emulator.deliveries()]
        assert attempts == [(1, 500), (2, 500), (3, 200)]
        times = [d["at"] for d in emulator.deliveries()]
        assert times[2] - times[1] >= times[1] - times[0] >= 0.05  # backoff grows
    finally:
        rec.close()


def test_retries_are_bounded_when_the_receiver_is_down(client, emulator):
    emulator.webhooks("configure", max_attempts=3, retry_base_ms=10)
    emulator.set_webhook_url("http://127.0.0.1:9/unreachable")
    client.v1.payment_intents.create(params=CREATE)
    _wait_for(lambda: len(emulator.deliveries()) == 3)
    assert emulator.wait_for_webhooks()
    time.sleep(0.1)
    deliveries = emulator.deliveries()
    assert [d["attempt"] for d in deliveries] == [1, 2, 3]
    assert all(d["status"] is None and d["error"] for d in deliveries)


def test_redeliver_sends_an_event_again(client, emulator, receiver):
    client.v1.payment_intents.create(params=CREATE)
    event_id = emulator.events()[0]["id"]
    emulator.webhooks("redeliver", event_id=event_id, times=3)
    _wait_for(lambda: len(receiver.received) == 4)
    assert set(receiver.ids()) == {event_id}


def test_duplicate_delivers_the_next_events_twice(client, emulator, receiver):
    emulator.webhooks("duplicate", events=1, times=2)
    client.v1.payment_intents.create(params=CREATE)
    client.v1.payment_intents.create(params=CREATE)
    assert emulator.wait_for_webhooks()
    ids = receiver.ids()
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]


def test_pause_then_resume_reversed(client, emulator, receiver):
    emulator.webhooks("pause")
    client.v1.payment_intents.create(params={**CREATE, "confirm": True, "payment_method": "pm_card_visa"})
    time.sleep(0.1)
    assert receiver.received == []
    emulator.webhooks("resume", order="reverse")
    assert emulator.wait_for_webhooks()
    assert receiver.types() == ["payment_intent.succeeded", "charge.succeeded", "payment_intent.created"]


def test_reorder_swaps_the_next_events(client, emulator, receiver):
    emulator.webhooks("reorder", events=2)
    client.v1.payment_intents.create(params={**CREATE, "confirm": True, "payment_method": "pm_card_visa"})
    assert emulator.wait_for_webhooks()
    assert receiver.types() == ["charge.succeeded", "payment_intent.created", "payment_intent.succeeded"]


def test_delay_holds_the_next_event_back(client, emulator, receiver):
    emulator.webhooks("delay", events=1, ms=300)
    client.v1.payment_intents.create(params=CREATE)
    client.v1.payment_intents.create(params=CREATE)
    _wait_for(lambda: len(receiver.received) == 2)
    first_created = emulator.events()[0]["id"]
    assert receiver.ids()[-1] == first_created  # the delayed one arrived last
