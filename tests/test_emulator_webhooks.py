"""Events and signed webhooks: every state change is an event, delivered, signed, retried and steerable."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

CREATE = {"amount": 3000, "currency": "usd", "metadata": {"order_id": "5"}}


class Receiver:
    """A tiny webhook endpoint: records every delivery, answers 500 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[dict, str, str]] = []  # (event, raw payload, Stripe-Signature)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with receiver.lock:
                    receiver.received.append((json.loads(raw), raw, self.headers.get("Stripe-Signature", "")))
                    failing = len(receiver.received) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def types(self) -> list[str]:
        return [event["type"] for event, _, _ in self.received]

    def ids(self) -> list[str]:
        return [event["id"] for event, _, _ in self.received]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver(stripe_emulator):
    rec = Receiver()
    stripe_emulator.set_webhook_url(rec.url)
    yield rec
    rec.close()


@pytest.fixture
def client(stripe_emulator):
    return stripe_emulator.client()


def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_every_state_change_is_an_event_in_order(client, stripe_emulator, receiver):
    pi = client.v1.payment_intents.create(params=CREATE)
    with pytest.raises(stripe.CardError):
        client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa_chargeDeclined"})
    client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_threeDSecure2Required"})
    stripe_emulator.authenticate(pi.id, "succeed")
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
    assert [e["type"] for e in stripe_emulator.events()] == expected
    assert stripe_emulator.wait_for_webhooks()
    assert receiver.types() == expected
    succeeded = stripe_emulator.events("payment_intent.succeeded")[0]
    assert succeeded["data"]["object"]["id"] == pi.id and succeeded["data"]["object"]["status"] == "succeeded"
    refunded = stripe_emulator.events("charge.refunded")[0]["data"]["object"]
    assert refunded["object"] == "charge" and refunded["amount_refunded"] == 100


def test_manual_capture_events(client, stripe_emulator):
    pi = client.v1.payment_intents.create(
        params={**CREATE, "capture_method": "manual", "confirm": True, "payment_method": "pm_card_visa"}
    )
    client.v1.payment_intents.capture(pi.id)
    assert [e["type"] for e in stripe_emulator.events()][1:] == [
        "charge.succeeded",
        "payment_intent.amount_capturable_updated",
        "charge.captured",
        "payment_intent.succeeded",
    ]


def test_events_api_retrieve_and_list(client, stripe_emulator):
    for _ in range(3):
        client.v1.payment_intents.create(params=CREATE, options={"idempotency_key": f"k{_}"})
    ids = [e["id"] for e in stripe_emulator.events()]
    event = client.v1.events.retrieve(ids[0])
    assert event.object == "event" and event.type == "payment_intent.created"
    assert event.request.idempotency_key == "k0" and event.request.id.startswith("req_")
    page = client.v1.events.list(params={"limit": 2})
    assert [e.id for e in page.data] == ids[::-1][:2] and page.has_more
    rest = client.v1.events.list(params={"limit": 2, "starting_after": page.data[-1].id})
    assert [e.id for e in rest.data] == ids[:1] and not rest.has_more
    assert client.v1.events.list(params={"type": "charge.succeeded"}).data == []


def test_webhooks_carry_a_signature_that_stripe_accepts(client, stripe_emulator, receiver):
    client.v1.payment_intents.create(params=CREATE)
    _wait_for(lambda: receiver.received)
    event, payload, header = receiver.received[0]
    assert header.startswith("t=") and ",v1=" in header
    verified = stripe.Webhook.construct_event(payload, header, stripe_emulator.secret)
    assert verified.id == event["id"] and verified.type == "payment_intent.created"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_wrong")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.replace("3000", "1"), header, stripe_emulator.secret)


def test_a_failing_receiver_gets_the_event_again_with_backoff(client, stripe_emulator):
    rec = Receiver(fail_first=2)
    stripe_emulator.set_webhook_url(rec.url)
    try:
        client.v1.payment_intents.create(params=CREATE)
        _wait_for(lambda: len(rec.received) == 3)
        assert len(set(rec.ids())) == 1
        assert stripe_emulator.wait_for_webhooks()
        attempts = [(d["attempt"], d["status"]) for d in stripe_emulator.deliveries()]
        assert attempts == [(1, 500), (2, 500), (3, 200)]
        times = [d["at"] for d in stripe_emulator.deliveries()]
        assert times[2] - times[1] >= times[1] - times[0] >= 0.05  # backoff grows
    finally:
        rec.close()


def test_retries_are_bounded_when_the_receiver_is_down(client, stripe_emulator):
    stripe_emulator.webhooks("configure", max_attempts=3, retry_base_ms=10)
    stripe_emulator.set_webhook_url("http://127.0.0.1:9/unreachable")
    client.v1.payment_intents.create(params=CREATE)
    _wait_for(lambda: len(stripe_emulator.deliveries()) == 3)
    assert stripe_emulator.wait_for_webhooks()
    time.sleep(0.1)
    deliveries = stripe_emulator.deliveries()
    assert [d["attempt"] for d in deliveries] == [1, 2, 3]
    assert all(d["status"] is None and d["error"] for d in deliveries)


def test_redeliver_sends_an_event_again(client, stripe_emulator, receiver):
    client.v1.payment_intents.create(params=CREATE)
    event_id = stripe_emulator.events()[0]["id"]
    stripe_emulator.webhooks("redeliver", event_id=event_id, times=3)
    _wait_for(lambda: len(receiver.received) == 4)
    assert set(receiver.ids()) == {event_id}


def test_duplicate_delivers_the_next_events_twice(client, stripe_emulator, receiver):
    stripe_emulator.webhooks("duplicate", events=1, times=2)
    client.v1.payment_intents.create(params=CREATE)
    client.v1.payment_intents.create(params=CREATE)
    assert stripe_emulator.wait_for_webhooks()
    ids = receiver.ids()
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]


def test_pause_then_resume_reversed(client, stripe_emulator, receiver):
    stripe_emulator.webhooks("pause")
    client.v1.payment_intents.create(params={**CREATE, "confirm": True, "payment_method": "pm_card_visa"})
    time.sleep(0.1)
    assert receiver.received == []
    stripe_emulator.webhooks("resume", order="reverse")
    assert stripe_emulator.wait_for_webhooks()
    assert receiver.types() == ["payment_intent.succeeded", "charge.succeeded", "payment_intent.created"]


def test_reorder_swaps_the_next_events(client, stripe_emulator, receiver):
    stripe_emulator.webhooks("reorder", events=2)
    client.v1.payment_intents.create(params={**CREATE, "confirm": True, "payment_method": "pm_card_visa"})
    assert stripe_emulator.wait_for_webhooks()
    assert receiver.types() == ["charge.succeeded", "payment_intent.created", "payment_intent.succeeded"]


def test_delay_holds_the_next_event_back(client, stripe_emulator, receiver):
    stripe_emulator.webhooks("delay", events=1, ms=300)
    client.v1.payment_intents.create(params=CREATE)
    client.v1.payment_intents.create(params=CREATE)
    _wait_for(lambda: len(receiver.received) == 2)
    first_created = stripe_emulator.events()[0]["id"]
    assert receiver.ids()[-1] == first_created  # the delayed one arrived last
