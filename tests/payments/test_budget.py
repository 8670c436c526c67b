"""The shared Stripe budget (payments/budget.py) and the gateway's 429 retry, against real Redis and the emulator.

Rates are counted over measured intervals (requests granted vs ``rate * interval + burst``), never as
wall-clock bounds on how long something took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from orders.models import CheckoutSaga
from payments import budget as stripe_budget
from payments.gateway import (
    PaymentProviderBusy,
    payment_intent_confirm,
    payment_intent_create,
    payment_intent_create_and_confirm,
)
from tests.support.saga import charges, guest_with_cart, held, invariants_hold, make_product, stock

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
CONFIRM = "POST /v1/payment_intents/*/confirm"
CREATE = "POST /v1/payment_intents"


@pytest.fixture(autouse=True)
def _fresh_budget(redis_client):
    """Every test starts with an empty bucket (``redis_client`` flushes the DB) and no remembered outage."""
    stripe_budget._outage.update(until=0.0, logged=False)
    yield
    stripe_budget._outage.update(until=0.0, logged=False)


def _count_requests(emulator, match: str = "*") -> int:
    """A 0 ms latency rule that never runs out: its ``fired`` is the number of API requests the emulator saw."""
    return emulator.add_fault(match, "latency", times=0, ms=0)["id"]


def _seen(emulator, rule_id: int) -> int:
    return next(f["fired"] for f in emulator.faults() if f["id"] == rule_id)


def _order() -> str:
    return f"ord_{uuid.uuid4().hex[:12]}"


def _create(order_id: str | None = None):
    return payment_intent_create(order_id=order_id or _order(), checkout_id="chk_budget", amount=1000, currency="usd")


def _drain() -> None:
    """Take every token the fresh bucket holds (it starts full: burst tokens)."""
    for _ in range(int(stripe_budget.burst(float(settings.CARTFLOW_STRIPE_RATE)))):
        stripe_budget.spend()


# --- the rate holds across processes ------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import django
    django.setup()
    from payments.gateway import payment_intent_retrieve
    go, calls, intent = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    for _ in range(calls):
        before = time.time()
        payment_intent_retrieve(intent_id=intent)
        print(json.dumps([before, time.time()]), flush=True)
    """
)


def test_two_processes_share_one_rate(stripe_emulator, tmp_path):
    """Two real processes calling Stripe through the gateway get, together, no more than rate x time + burst."""
    rate, calls = 10.0, 15
    intent = stripe_emulator.client().v1.payment_intents.create(params={"amount": 500, "currency": "usd"}).id
    seen = _count_requests(stripe_emulator, "GET /v1/payment_intents/*")
    go = tmp_path / "go"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cartflow.settings",
        "CARTFLOW_TESTING": "1",
        "REDIS_URL": settings.REDIS_URL,
        "STRIPE_API_BASE": stripe_emulator.url,
        "CARTFLOW_STRIPE_RATE": str(rate),
        "CARTFLOW_STRIPE_WAIT_SECONDS": "30",
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(go), str(calls), intent],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        go.touch()
        spans = [[json.loads(line) for line in child.stdout] for child in children]
        assert [child.wait(timeout=60) for child in children] == [0, 0]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert [len(s) for s in spans] == [calls, calls]
    every = sorted(span for s in spans for span in s)
    interval = max(after for _, after in every) - min(before for before, _ in every)
    capacity = stripe_budget.burst(rate)
    # Every token was taken inside [first call began, last call ended]: at most burst + rate x interval.
    assert len(every) <= capacity + rate * interval, (len(every), interval)
    # The same in any one-second window: calls that began and ended inside it.
    for start, _ in every:
        inside = sum(1 for before, after in every if before >= start and after <= start + 1.0)
        assert inside <= capacity + rate, (start, inside)
    # The processes really overlapped (each one's calls span the other's), and Stripe saw one request per call.
    first, second = ([b for b, _ in s] for s in spans)
    assert min(first) < max(second) and min(second) < max(first)
    assert _seen(stripe_emulator, seen) == 2 * calls


# --- past the wait: PaymentProviderBusy, nothing sent ---------------------------------------------------


def test_no_token_within_the_wait_is_busy_and_nothing_reaches_stripe(stripe_emulator, settings):
    settings.CARTFLOW_STRIPE_RATE = 0.2  # one token per 5 s: none comes within the wait
    settings.CARTFLOW_STRIPE_WAIT_SECONDS = 0.3
    _drain()
    seen = _count_requests(stripe_emulator)
    busy_before = REGISTRY.get_sample_value("cartflow_stripe_budget_busy_total", {"priority": "buyer"}) or 0
    with pytest.raises(PaymentProviderBusy) as raised:
        _create()
    assert raised.value.code == "payment_provider_busy" and raised.value.retry_after >= 1
    assert _seen(stripe_emulator, seen) == 0
    assert stripe_emulator.server.state.counts()["payment_intents"] == 0
    assert REGISTRY.get_sample_value("cartflow_stripe_budget_busy_total", {"priority": "buyer"}) == busy_before + 1

    settings.CARTFLOW_STRIPE_RATE = 0  # unlimited: the same call goes through
    assert _create().status == "requires_payment_method"
    assert _seen(stripe_emulator, seen) == 1


def test_a_busy_confirm_is_503_with_retry_after_nothing_charged_and_the_hold_kept(stripe_emulator, settings):
    product = make_product()
    client = guest_with_cart((product, 1))
    start = client.post("/api/checkout/start", {}, format="json").json()
    settings.CARTFLOW_STRIPE_RATE = 0.2
    settings.CARTFLOW_STRIPE_WAIT_SECONDS = 0.3
    _drain()
    seen = _count_requests(stripe_emulator)

    busy = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    assert busy.status_code == 503, busy.content
    assert busy["Content-Type"] == "application/problem+json" and int(busy["Retry-After"]) >= 1
    assert busy.json()["code"] == "payment_provider_busy"
    assert _seen(stripe_emulator, seen) == 0 and charges(stripe_emulator) == 0
    assert held(start["checkoutId"]) == 1 and stock(product) == (10, 1)
    assert CheckoutSaga.objects.get(public_id=start["checkoutId"]).state == "awaiting_payment"

    settings.CARTFLOW_STRIPE_RATE = 0  # room again: the same request now pays, once
    again = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    assert again.status_code == 200, again.content
    assert again.json()["status"] == "confirmed"
    assert charges(stripe_emulator) == 1 and stock(product) == (9, 0)
    invariants_hold()


def test_no_token_for_a_retry_after_an_unanswered_request_is_transient_not_busy(stripe_emulator, settings):
    """Once a request of the call went out unanswered (a 500 that stripe-python retries), "nothing was sent"
    no longer holds: running out of budget then is PaymentTransientError (outcome unknown), not busy."""
    from payments.gateway import PaymentTransientError

    settings.STRIPE_MAX_NETWORK_RETRIES = 2
    settings.CARTFLOW_STRIPE_RATE = 0.2
    settings.CARTFLOW_STRIPE_WAIT_SECONDS = 0.3
    intent = stripe_emulator.client().v1.payment_intents.create(params={"amount": 500, "currency": "usd"}).id
    stripe_budget.spend()  # 1 token left: the first request gets it, stripe-python's retry does not
    stripe_emulator.add_fault(CONFIRM, "http_500", times=1)
    seen = _count_requests(stripe_emulator)
    with pytest.raises(PaymentTransientError):
        payment_intent_confirm(order_id=_order(), intent_id=intent, payment_method="pm_card_visa", attempt=0)
    assert _seen(stripe_emulator, seen) == 1


# --- priorities ------------------------------------------------------------------------------------------


def test_background_calls_leave_the_reserve_to_buyers(settings, monkeypatch):
    """At the same bucket level, a buyer gets a token at once and a background call gets none."""
    settings.CARTFLOW_STRIPE_RATE = 0.1  # refill is negligible here: one token per 10 s
    settings.CARTFLOW_STRIPE_WAIT_SECONDS = 0
    monkeypatch.setattr(stripe_budget, "BACKGROUND_WAIT_SECONDS", 0.3)
    stripe_budget.spend()  # the fresh bucket held 2 (the burst): 1 left, below a background call's need
    with stripe_budget.background(), pytest.raises(PaymentProviderBusy):
        stripe_budget.spend()
    stripe_budget.spend()  # a buyer takes that last token without waiting
    with pytest.raises(PaymentProviderBusy):
        stripe_budget.spend()
    assert stripe_budget.priority() == "buyer"  # the block ended: back to buyer priority


def test_background_calls_wait_while_buyers_use_the_whole_rate(settings):
    """Buyers in two threads keep taking every token; a background call started with them gets its token
    only after every buyer's call, and it does get one (the bucket fills once buyers stop)."""
    settings.CARTFLOW_STRIPE_RATE = 4.0
    settings.CARTFLOW_STRIPE_WAIT_SECONDS = 10
    _drain()
    order: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def buyer() -> None:
        try:
            for _ in range(4):
                stripe_budget.spend()
                with lock:
                    order.append("buyer")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def background() -> None:
        try:
            with stripe_budget.background():
                stripe_budget.spend()
            with lock:
                order.append("background")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=buyer) for _ in range(2)] + [threading.Thread(target=background)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert order == ["buyer"] * 8 + ["background"], order


def test_webhook_processing_spends_at_background_priority(stripe_emulator, settings, monkeypatch):
    """The webhook task's re-fetch is a background call: with the bucket at the buyers' reserve it waits,
    then ends retryable (the event stays ``received``), and nothing reached Stripe."""
    from payments.models import WebhookEvent
    from payments.webhooks import RETRYABLE, webhook_event_process

    intent = stripe_emulator.client().v1.payment_intents.create(params={"amount": 500, "currency": "usd"}).id
    event = {
        "id": "evt_budget",
        "type": "payment_intent.succeeded",
        "data": {"object": {"object": "payment_intent", "id": intent}},
    }
    WebhookEvent.objects.create(event_id="evt_budget", type=event["type"], payload=json.dumps(event))
    settings.CARTFLOW_STRIPE_RATE = 0.1
    monkeypatch.setattr(stripe_budget, "BACKGROUND_WAIT_SECONDS", 0.3)
    stripe_budget.spend()  # 1 token left: enough for a buyer, not for background work
    seen = _count_requests(stripe_emulator)
    with pytest.raises(RETRYABLE) as raised:
        webhook_event_process(event_id="evt_budget")
    assert isinstance(raised.value, PaymentProviderBusy)
    assert WebhookEvent.objects.get(event_id="evt_budget").status == WebhookEvent.RECEIVED
    assert _seen(stripe_emulator, seen) == 0


# --- Stripe's 429s ----------------------------------------------------------------------------------------


def test_a_429_storm_is_retried_with_the_same_key_and_creates_one_intent(stripe_emulator):
    stripe_emulator.add_fault("POST /v1/payment_intents", "rate_limit", times=3)
    seen = _count_requests(stripe_emulator, "POST /v1/payment_intents")
    limited_before = REGISTRY.get_sample_value("cartflow_stripe_rate_limited_total") or 0
    order_id = _order()
    intent = _create(order_id)
    assert intent.status == "requires_payment_method"
    assert _seen(stripe_emulator, seen) == 4  # three 429s, then the request that went through
    assert stripe_emulator.server.state.counts()["payment_intents"] == 1
    assert REGISTRY.get_sample_value("cartflow_stripe_rate_limited_total") == limited_before + 3
    assert _create(order_id).intent_id == intent.intent_id  # same key: the same PaymentIntent again
    assert stripe_emulator.server.state.counts()["payment_intents"] == 1


def test_a_429_storm_on_the_create_and_confirm_charges_once_and_never_fails_the_checkout(stripe_emulator):
    product = make_product()
    client = guest_with_cart((product, 1))
    start = client.post("/api/checkout/start", {}, format="json")
    assert start.status_code == 201, start.content
    # The first confirm creates and confirms the intent in one call: that call meets the storm.
    stripe_emulator.add_fault(CREATE, "rate_limit", times=2)
    paid = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    assert paid.status_code == 200, paid.content
    assert paid.json()["status"] == "confirmed"
    assert stripe_emulator.faults() == []  # both 429s were answered (a spent rule is removed)
    assert charges(stripe_emulator) == 1
    assert stripe_emulator.server.state.counts()["payment_intents"] == 1
    invariants_hold()


def test_a_429_storm_on_the_client_side_intent_and_its_confirm_charges_once(stripe_emulator):
    product = make_product()
    client = guest_with_cart((product, 1))
    start = client.post("/api/checkout/start", {}, format="json").json()
    stripe_emulator.add_fault(CREATE, "rate_limit", times=2)
    intent = client.post(f"/api/checkout/{start['checkoutId']}/payment-intent", {}, format="json")
    assert intent.status_code == 200, intent.content
    assert stripe_emulator.faults() == []
    # A later confirm confirms that intent: the storm is on the confirm endpoint now.
    stripe_emulator.add_fault(CONFIRM, "rate_limit", times=3)
    paid = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    assert paid.status_code == 200 and paid.json()["status"] == "confirmed", paid.content
    assert stripe_emulator.faults() == []
    assert charges(stripe_emulator) == 1
    assert stripe_emulator.server.state.counts()["payment_intents"] == 1
    invariants_hold()


def test_an_endless_429_storm_is_busy_not_a_decline_and_the_retry_pays_once(stripe_emulator):
    product = make_product()
    client = guest_with_cart((product, 1))
    start = client.post("/api/checkout/start", {}, format="json").json()
    # The confirm creates and confirms the order's PaymentIntent in one call: the storm is on the create.
    stripe_emulator.add_fault(CREATE, "rate_limit", times=0)
    with pytest.raises(PaymentProviderBusy):  # the gateway itself: busy, not transient, not a decline
        payment_intent_create_and_confirm(
            order_id=start["orderId"], checkout_id=start["checkoutId"], amount=1000, currency="usd",
            attempt=0, payment_method="pm_card_visa",
        )  # fmt: skip
    busy = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    assert busy.status_code == 503 and busy.json()["code"] == "payment_provider_busy", busy.content
    assert busy["Retry-After"]
    assert charges(stripe_emulator) == 0 and held(start["checkoutId"]) == 1
    assert stripe_emulator.server.state.counts()["payment_intents"] == 0
    saga = CheckoutSaga.objects.get(public_id=start["checkoutId"])
    assert saga.state == "awaiting_payment" and saga.last_error_code == ""  # open, no decline recorded
    stripe_emulator.clear_faults()
    paid = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    assert paid.status_code == 200 and paid.json()["status"] == "confirmed", paid.content
    assert charges(stripe_emulator) == 1
    assert stripe_emulator.server.state.counts()["payment_intents"] == 1
    invariants_hold()


# --- Redis down: fail open -------------------------------------------------------------------------------


def test_with_redis_down_stripe_calls_go_through_unmetered(stripe_emulator, settings, spare_redis):
    settings.CARTFLOW_STRIPE_RATE = 0.2  # with Redis up, the third call would be busy (the burst is 2)
    settings.CARTFLOW_STRIPE_WAIT_SECONDS = 0.3
    open_before = REGISTRY.get_sample_value("cartflow_stripe_budget_fail_open_total") or 0
    caches = {"default": {**settings.CACHES["default"], "LOCATION": spare_redis.url}}
    with override_settings(CACHES=caches):
        APIClient().get("/healthz")
        spare_redis.stop()
        intents = [_create() for _ in range(3)]
    assert [i.status for i in intents] == ["requires_payment_method"] * 3
    assert stripe_emulator.server.state.counts()["payment_intents"] == 3
    assert REGISTRY.get_sample_value("cartflow_stripe_budget_fail_open_total") == open_before + 3
