"""Fault injection through ``/_emulator/faults``, seen by the real ``stripe`` client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import stripe

CREATE = {"amount": 5000, "currency": "usd", "metadata": {"order_id": "1"}}
CONFIRM = "POST /v1/payment_intents/*/confirm"


@pytest.fixture
def client(emulator):
    return emulator.client(max_network_retries=0)


@pytest.fixture
def pi(client):
    return client.v1.payment_intents.create(params=CREATE)


def _confirm(client, pi_id, key="confirm-1", pm="pm_card_visa"):
    return client.v1.payment_intents.confirm(pi_id, params={"payment_method": pm}, options={"idempotency_key": key})


def test_http_500_answers_before_the_operation_and_a_retry_charges_once(client, pi, emulator):
    emulator.add_fault(CONFIRM, "http_500")
    with pytest.raises(stripe.APIError) as excinfo:
        _confirm(client, pi.id)
    assert excinfo.value.http_status == 500
    assert client.v1.payment_intents.retrieve(pi.id).status == "requires_payment_method"
    retried = _confirm(client, pi.id)
    assert retried.status == "succeeded"
    assert retried.last_response.headers.get("Idempotent-Replayed") is None  # nothing was stored: it ran now
    assert len(emulator.events("charge.succeeded")) == 1


def test_the_clients_own_retries_ride_over_http_500(emulator, pi):
    emulator.add_fault(CONFIRM, "http_500", times=2)
    retrying = emulator.client(max_network_retries=2)
    assert _confirm(retrying, pi.id).status == "succeeded"
    assert emulator.faults() == []
    assert len(emulator.events("charge.succeeded")) == 1


def test_timeout_drops_the_connection_before_the_operation(client, pi, emulator):
    emulator.add_fault(CONFIRM, "timeout", ms=100)
    with pytest.raises(stripe.APIConnectionError):
        _confirm(client, pi.id)
    assert emulator.faults() == []  # it fired, and dropped the connection before the confirm ran
    assert client.v1.payment_intents.retrieve(pi.id).status == "requires_payment_method"
    assert _confirm(client, pi.id).status == "succeeded"
    assert len(emulator.events("charge.succeeded")) == 1


def test_lose_response_performs_the_operation_and_a_retry_replays_it(client, pi, emulator):
    emulator.add_fault(CONFIRM, "lose_response")
    with pytest.raises(stripe.APIConnectionError):
        _confirm(client, pi.id)
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"  # it happened
    replay = _confirm(client, pi.id)
    assert replay.status == "succeeded"
    assert replay.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(emulator.events("charge.succeeded")) == 1


def test_rate_limit_is_a_429_and_stores_nothing(client, pi, emulator):
    emulator.add_fault(CONFIRM, "rate_limit")
    with pytest.raises(stripe.RateLimitError) as excinfo:
        _confirm(client, pi.id)
    assert excinfo.value.http_status == 429
    assert _confirm(client, pi.id).last_response.headers.get("Idempotent-Replayed") is None


def test_latency_delays_the_answer_but_not_the_outcome(client, pi, emulator):
    emulator.add_fault(CONFIRM, "latency", ms=300)
    confirmed = _confirm(client, pi.id)
    assert emulator.faults() == []  # the fault fired on this call
    assert confirmed.status == "succeeded" and confirmed.last_response.headers.get("Idempotent-Replayed") is None
    assert len(emulator.events("charge.succeeded")) == 1


def test_decline_forces_a_card_decline_for_a_good_card(client, pi, emulator):
    emulator.add_fault(CONFIRM, "decline")
    with pytest.raises(stripe.CardError) as excinfo:
        _confirm(client, pi.id)
    assert (excinfo.value.code, excinfo.value.error.decline_code) == ("card_declined", "generic_decline")
    assert _confirm(client, pi.id, key="confirm-2").status == "succeeded"


def test_faults_match_method_and_path_and_only_fire_times(client, emulator):
    emulator.add_fault("POST /v1/refunds", "http_500", times=1)
    emulator.add_fault("/v1/payment_intents/*", "http_500", times=1)  # any method
    pi = client.v1.payment_intents.create(params=CREATE)  # no match: exact path without /*
    with pytest.raises(stripe.APIError):
        client.v1.payment_intents.retrieve(pi.id)
    assert client.v1.payment_intents.retrieve(pi.id).id == pi.id
    assert [f["match"] for f in emulator.faults()] == ["POST /v1/refunds"]
    emulator.clear_faults()
    assert emulator.faults() == []


def test_probability_zero_never_fires_and_unlimited_faults_stay(client, emulator):
    emulator.add_fault("GET /v1/payment_intents", "http_500", times=0, probability=0.0)
    for _ in range(5):
        client.v1.payment_intents.list()
    assert emulator.faults()[0]["fired"] == 0


def test_a_bad_fault_spec_is_a_400(emulator):
    request = urllib.request.Request(
        emulator.url + "/_emulator/faults",
        data=json.dumps({"match": "*", "fault": "explode"}).encode(),
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)
    assert excinfo.value.code == 400


def test_health_and_reset(client, emulator):
    client.v1.payment_intents.create(params=CREATE)
    assert emulator.control("GET", "/_emulator/health")["payment_intents"] == 1
    emulator.reset()
    assert emulator.control("GET", "/_emulator/health")["payment_intents"] == 0
