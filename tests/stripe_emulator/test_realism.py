"""The emulator's realistic profile (stripe_emulator/realism.py): latency and Stripe's rate limits.

Every call goes through the real ``stripe`` client over HTTP to an emulator this test starts on a free port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
import stripe

from stripe_emulator.realism import RealismSpecError, parse_rate_limits
from tests.stripe_emulator.support import ROOT, free_port


def _create(client, key: str | None = None, amount: int = 1000):
    options = {"idempotency_key": key} if key else {}
    return client.v1.payment_intents.create(params={"amount": amount, "currency": "usd"}, options=options)


def _until_rate_limited(call, attempts: int = 50) -> tuple[int, stripe.RateLimitError]:
    """Call until one answer is 429; returns how many succeeded first and the error."""
    for done in range(attempts):
        try:
            call()
        except stripe.RateLimitError as exc:
            return done, exc
    raise AssertionError(f"{attempts} calls in a row were not rate limited")


def _assert_stripe_rate_limit(exc: stripe.RateLimitError, reason: str) -> None:
    assert exc.http_status == 429
    error = exc.json_body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "rate_limit"
    assert "rate limit" in error["message"].lower()
    assert exc.headers["Request-Id"].startswith("req_")
    assert exc.headers["Stripe-Rate-Limited-Reason"] == reason
    # Stripe's clients retry only 429 lock timeouts (Stripe-Should-Retry: true), never a real rate limit.
    assert "Stripe-Should-Retry" not in exc.headers


def test_latency_is_added_to_each_call_and_concurrent_calls_overlap(emulator_factory):
    latency_ms, clients = 300, 8
    emulator = emulator_factory(latency_ms=latency_ms, latency_jitter_ms=0)
    barrier = threading.Barrier(clients)
    durations: list[float] = []
    failures: list[BaseException] = []

    def one() -> None:
        client = emulator.client(max_network_retries=0, http_client=stripe.new_default_http_client(timeout=20))
        barrier.wait()
        t0 = time.perf_counter()
        try:
            _create(client)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        durations.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "the calls were never all answered"
    assert not failures
    assert min(durations) >= latency_ms / 1000
    health = emulator.control("GET", "/_emulator/health")
    assert health["payment_intents"] == clients
    # Every call was being answered at the same moment: the latency does not serialize clients.
    assert health["api_peak_in_flight"] == clients


def test_jitter_spreads_latency_around_the_setting(emulator_factory):
    emulator = emulator_factory(latency_ms=50, latency_jitter_ms=40)
    samples = [emulator.server.latency.sample() for _ in range(200)]
    assert all(0.010 <= s <= 0.090 for s in samples)
    assert len({round(s, 4) for s in samples}) > 100
    client = emulator.client()
    t0 = time.perf_counter()
    _create(client)
    assert time.perf_counter() - t0 >= 0.010


class FrozenClock:
    """The rate limiter's clock, stopped: token buckets refill only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _limited(emulator_factory, rate_limits):
    emulator = emulator_factory(rate_limits=rate_limits)
    clock = FrozenClock()
    emulator.server.rate_limiter.clock = clock
    return emulator, clock, emulator.client(max_network_retries=0)


def test_per_endpoint_limit_answers_429_rate_limit_past_it_and_counts_each_route_template(emulator_factory):
    emulator, clock, client = _limited(emulator_factory, (3, 1000))
    ids = [_create(client).id for _ in range(3)]  # up to the limit: all succeed
    with pytest.raises(stripe.RateLimitError) as raised:
        _create(client)
    _assert_stripe_rate_limit(raised.value, "endpoint-rate")
    # Another endpoint has its own budget, and retrieving different ids counts against that one endpoint.
    assert [client.v1.payment_intents.retrieve(i).id for i in ids] == ids
    with pytest.raises(stripe.RateLimitError) as raised:
        client.v1.payment_intents.retrieve(ids[0])
    _assert_stripe_rate_limit(raised.value, "endpoint-rate")
    # A third of a second later, one more create fits (3 per second), and only one.
    clock.advance(1 / 3)
    _create(client)
    with pytest.raises(stripe.RateLimitError):
        _create(client)
    assert emulator.control("GET", "/_emulator/health")["payment_intents"] == 4


def test_global_limit_counts_every_endpoint(emulator_factory):
    _, clock, client = _limited(emulator_factory, (None, 4))
    pi = _create(client)
    client.v1.payment_intents.retrieve(pi.id)
    client.v1.payment_intents.list()
    client.v1.events.list()  # four requests on four endpoints: up to the global limit
    with pytest.raises(stripe.RateLimitError) as raised:
        client.v1.refunds.list()
    _assert_stripe_rate_limit(raised.value, "global-rate")
    clock.advance(1.0)
    assert client.v1.refunds.list().data == []


def test_rate_limited_create_changes_nothing_and_its_retry_creates_exactly_one(emulator_factory):
    emulator, clock, client = _limited(emulator_factory, (1, 1000))
    first = _create(client, key="order-1")
    before = emulator.control("GET", "/_emulator/health")
    with pytest.raises(stripe.RateLimitError):
        _create(client, key="order-2", amount=2000)
    after = emulator.control("GET", "/_emulator/health")
    for count in ("payment_intents", "events", "idempotency_keys", "charges"):
        assert after[count] == before[count], count
    clock.advance(1.0)
    retried = _create(client, key="order-2", amount=2000)
    assert not retried.last_response.headers.get("Idempotent-Replayed")
    intents = [pi for pi in emulator.server.state.payment_intents.values() if pi["amount"] == 2000]
    assert [pi["id"] for pi in intents] == [retried.id]
    assert retried.id != first.id
    # The key now holds the result: a replay returns the same intent and creates nothing.
    clock.advance(1.0)
    replay = _create(client, key="order-2", amount=2000)
    assert replay.id == retried.id
    assert replay.last_response.headers.get("Idempotent-Replayed") == "true"
    assert emulator.control("GET", "/_emulator/health")["payment_intents"] == 2


def test_settings_reach_the_command_line_emulator_from_the_environment(tmp_path):
    port = free_port()
    env = {**os.environ, "STRIPE_EMULATOR_RATE_LIMITS": "2/100", "STRIPE_EMULATOR_LATENCY_MS": "50"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripe_emulator", "--port", str(port), "--webhook-url", ""],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"{url}/_emulator/health", timeout=1).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.1)
        assert health["latency"] == "50 ± 10 ms"
        assert health["rate_limits"].startswith("2/100 ")
        client = stripe.StripeClient("sk_test_cli", base_addresses={"api": url})
        _, exc = _until_rate_limited(lambda: _create(client))
        _assert_stripe_rate_limit(exc, "endpoint-rate")
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_settings_are_refused_with_a_clear_message():
    done = subprocess.run(
        [sys.executable, "-m", "stripe_emulator", "--rate-limits", "fast"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "PER_ENDPOINT/GLOBAL" in done.stderr


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("25/100", (25, 100)), ("25", (25, None)), ("/100", (None, 100)), ("", (None, None)), ("off", (None, None))],
)
def test_rate_limit_spec(spec, expected):
    assert parse_rate_limits(spec) == expected


@pytest.mark.parametrize("spec", ["fast", "25/x", "-1/100"])
def test_rate_limit_spec_refuses_nonsense(spec):
    with pytest.raises(RealismSpecError):
        parse_rate_limits(spec)
