"""Idempotency keys as Stripe documents them: replay, mismatch, in use, per API key, kept 24 hours."""

from __future__ import annotations

import threading
import time

import pytest
import stripe

CREATE = {"amount": 1800, "currency": "eur", "metadata": {"order_id": "9"}}


@pytest.fixture
def client(emulator):
    return emulator.client(max_network_retries=0)


def _key(name: str) -> dict[str, str]:
    return {"idempotency_key": name}


def test_same_key_same_params_replays_the_stored_response(client, emulator):
    first = client.v1.payment_intents.create(params=CREATE, options=_key("order-9"))
    again = client.v1.payment_intents.create(params=CREATE, options=_key("order-9"))
    assert again.id == first.id
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert len(emulator.events("payment_intent.created")) == 1


def test_same_key_other_params_is_an_idempotency_error(client):
    client.v1.payment_intents.create(params=CREATE, options=_key("order-9"))
    with pytest.raises(stripe.IdempotencyError) as excinfo:
        client.v1.payment_intents.create(params={**CREATE, "amount": 1900}, options=_key("order-9"))
    assert excinfo.value.http_status == 400
    assert excinfo.value.error.type == "idempotency_error"


def test_same_key_on_another_endpoint_is_an_idempotency_error(client):
    pi = client.v1.payment_intents.create(params=CREATE, options=_key("shared"))
    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.cancel(pi.id, options=_key("shared"))


def test_keys_are_scoped_to_the_api_key(emulator):
    ours = emulator.client()
    theirs = stripe.StripeClient("sk_test_other_account", base_addresses={"api": emulator.url})
    a = ours.v1.payment_intents.create(params=CREATE, options=_key("k"))
    b = theirs.v1.payment_intents.create(params=CREATE, options=_key("k"))
    assert a.id != b.id


def test_a_card_error_is_replayed_not_retried(client, emulator):
    pi = client.v1.payment_intents.create(params=CREATE)
    params = {"payment_method": "pm_card_visa_chargeDeclined"}
    with pytest.raises(stripe.CardError) as first:
        client.v1.payment_intents.confirm(pi.id, params=params, options=_key("confirm-1"))
    with pytest.raises(stripe.CardError) as second:
        client.v1.payment_intents.confirm(pi.id, params=params, options=_key("confirm-1"))
    assert second.value.error.charge == first.value.error.charge
    assert second.value.headers.get("Idempotent-Replayed") == "true"
    assert len(emulator.events("charge.failed")) == 1


def test_a_validation_error_is_not_stored_under_the_key(client):
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.create(params={"currency": "eur"}, options=_key("fix-me"))
    fixed = client.v1.payment_intents.create(params=CREATE, options=_key("fix-me"))
    assert fixed.status == "requires_payment_method"


def test_a_concurrent_duplicate_gets_409_idempotency_key_in_use(client, emulator):
    emulator.add_fault("POST /v1/payment_intents", "latency", ms=600)
    results: dict[str, object] = {}

    def first() -> None:
        results["first"] = client.v1.payment_intents.create(params=CREATE, options=_key("slow"))

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 30
    while emulator.faults():  # the fault fired: the first request has arrived and holds the key
        assert time.monotonic() < deadline, "the first request never reached the emulator"
        time.sleep(0.01)
    with pytest.raises(stripe.APIError) as excinfo:
        client.v1.payment_intents.create(params=CREATE, options=_key("slow"))
    thread.join()
    assert excinfo.value.http_status == 409 and excinfo.value.error.code == "idempotency_key_in_use"
    replay = client.v1.payment_intents.create(params=CREATE, options=_key("slow"))
    assert replay.id == results["first"].id
    assert len(emulator.events("payment_intent.created")) == 1


def test_concurrent_confirms_with_different_keys_charge_once(emulator):
    """Twelve threads on their own connections confirm one intent: one wins, the rest see its new state."""
    client = emulator.client()
    pi = client.v1.payment_intents.create(params=CREATE)
    outcomes: list[str] = []
    barrier = threading.Barrier(12)

    def confirm(n: int) -> None:
        own = emulator.client()
        barrier.wait()
        try:
            own.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"}, options=_key(f"c{n}"))
            outcomes.append("succeeded")
        except stripe.InvalidRequestError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=confirm, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["payment_intent_unexpected_state"] * 11 + ["succeeded"]
    assert len(emulator.events("charge.succeeded")) == 1


def test_keys_expire_after_24_hours(client, emulator):
    first = client.v1.payment_intents.create(params=CREATE, options=_key("old"))
    emulator.advance_clock(23 * 3600)
    assert client.v1.payment_intents.create(params=CREATE, options=_key("old")).id == first.id
    emulator.advance_clock(3600 + 1)
    fresh = client.v1.payment_intents.create(params={**CREATE, "amount": 999}, options=_key("old"))
    assert fresh.id != first.id and fresh.amount == 999
