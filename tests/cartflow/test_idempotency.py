"""cartflow/idempotency.py at its edges: the replay window, a lock left by a request that died, racing claims.

The key's clock is ``cartflow.idempotency.clock``; the ``key_clock`` fixture moves it forward instead of
sleeping across CARTFLOW_IDEMPOTENCY_TTL_SECONDS / CARTFLOW_IDEMPOTENCY_LOCK_SECONDS. The module doubles as
a test-only URLConf: an ``@idempotent`` endpoint that counts its runs (and can die mid-request), plus the
project's routes for the checkout cases.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import include, path
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from cartflow import idempotency
from cartflow.models import IdempotencyRecord
from tests.support.saga import guest_with_cart, make_product
from tests.support.threads import race

RUNS: list[dict] = []
DIE_NEXT: list[bool] = []


class ProcessDied(BaseException):  # noqa: N818 - what the handler "does": the process goes away mid-request
    """Raised from the handler like SystemExit/KeyboardInterrupt when a worker process is killed."""


class _CountingApi(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []

    @idempotency.idempotent
    def post(self, request):  # noqa: ANN001, ANN201
        if DIE_NEXT:
            DIE_NEXT.pop()
            raise ProcessDied
        RUNS.append(dict(request.data))
        return Response({"run": len(RUNS)}, status=201)


urlpatterns = [path("api/_test/counted", _CountingApi.as_view()), path("", include("cartflow.urls"))]
handler404 = "cartflow.exceptions.api_404"
handler500 = "cartflow.exceptions.api_500"

pytestmark = pytest.mark.urls(__name__)


class KeyClock:
    def __init__(self) -> None:
        self.at = timezone.now()

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)

    def __call__(self):  # noqa: ANN204
        return self.at


@pytest.fixture
def key_clock(monkeypatch) -> KeyClock:
    clock = KeyClock()
    monkeypatch.setattr(idempotency, "clock", clock)
    return clock


@pytest.fixture(autouse=True)
def _reset_endpoint():
    RUNS.clear()
    DIE_NEXT.clear()
    yield
    RUNS.clear()
    DIE_NEXT.clear()


def _post(client: APIClient, key: str, body: dict | None = None):  # noqa: ANN202
    return client.post("/api/_test/counted", body or {"n": 1}, format="json", headers={"Idempotency-Key": key})


# --- the replay window (CARTFLOW_IDEMPOTENCY_TTL_SECONDS) ---


@pytest.mark.django_db
def test_a_replay_within_the_window_replays_and_after_it_runs_the_request_anew(key_clock, settings):
    settings.CARTFLOW_IDEMPOTENCY_TTL_SECONDS = 60
    client = APIClient()
    first = _post(client, "k-window")
    assert (first.status_code, first.json(), first.has_header("Idempotent-Replayed")) == (201, {"run": 1}, False)

    key_clock.advance(59)
    replay = _post(client, "k-window")
    assert (replay.status_code, replay.json(), replay["Idempotent-Replayed"]) == (201, {"run": 1}, "true")
    assert len(RUNS) == 1

    key_clock.advance(2)  # 61 s after the first use: the stored response is no longer replayed
    anew = _post(client, "k-window")
    assert (anew.status_code, anew.json(), anew.has_header("Idempotent-Replayed")) == (201, {"run": 2}, False)
    assert len(RUNS) == 2
    # The key is accepted again: its new response is what is replayed from now on.
    again = _post(client, "k-window")
    assert (again.json(), again["Idempotent-Replayed"]) == ({"run": 2}, "true")
    assert IdempotencyRecord.objects.filter(key="k-window").count() == 1


@pytest.mark.django_db
def test_after_the_window_a_key_may_carry_another_request(key_clock, settings):
    settings.CARTFLOW_IDEMPOTENCY_TTL_SECONDS = 60
    client = APIClient()
    _post(client, "k-reuse", {"n": 1})
    reused = _post(client, "k-reuse", {"n": 2})
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")

    key_clock.advance(61)
    later = _post(client, "k-reuse", {"n": 2})
    assert (later.status_code, later.json()) == (201, {"run": 2})
    assert RUNS == [{"n": 1}, {"n": 2}]


# --- a lock left behind (CARTFLOW_IDEMPOTENCY_LOCK_SECONDS) ---


@pytest.mark.django_db
def test_the_lock_of_a_request_that_died_is_taken_over_once_it_lapses(key_clock, settings):
    settings.CARTFLOW_IDEMPOTENCY_LOCK_SECONDS = 30
    client = APIClient()
    DIE_NEXT.append(True)
    with pytest.raises(ProcessDied):
        _post(client, "k-died")
    record = IdempotencyRecord.objects.get(key="k-died")
    assert record.completed_at is None and record.locked_until == key_clock.at + timedelta(seconds=30)

    key_clock.advance(29)  # the lock still holds: the first request could be running
    busy = _post(client, "k-died")
    assert (busy.status_code, busy.json()["code"], busy["Retry-After"]) == (409, "idempotency_request_in_progress", "1")
    assert RUNS == []

    key_clock.advance(2)  # lapsed: the retry takes the record over instead of 409 forever
    taken = _post(client, "k-died")
    assert (taken.status_code, taken.json(), taken.has_header("Idempotent-Replayed")) == (201, {"run": 1}, False)
    replay = _post(client, "k-died")
    assert (replay.json(), replay["Idempotent-Replayed"]) == ({"run": 1}, "true")
    assert len(RUNS) == 1
    record.refresh_from_db()
    assert record.completed_at is not None and record.locked_until is None


@pytest.mark.django_db(transaction=True)
def test_racing_claims_of_one_key_let_exactly_one_run():
    """The lock at the service level, with real concurrent connections (the HTTP 409 is in
    tests/orders/test_checkout_concurrency.py): one claim owns the key, every other one is told it is busy."""

    def claim(_i: int) -> str:
        return idempotency._claim("scope:race", "k-race", "f" * 64)[0]

    verdicts = race(8, claim)
    assert sorted(verdicts) == ["busy"] * 7 + ["run"], verdicts
    assert IdempotencyRecord.objects.filter(key="k-race").count() == 1


# --- the window through a real endpoint ---


@pytest.mark.django_db(transaction=True)
def test_checkout_start_after_the_window_runs_again_and_finds_the_checkout(key_clock, settings, stripe_emulator):
    settings.CARTFLOW_IDEMPOTENCY_TTL_SECONDS = 3600
    client = guest_with_cart((make_product(), 1))
    key = {"Idempotency-Key": "start-window"}
    first = client.post("/api/checkout/start", {}, format="json", headers=key)
    assert first.status_code == 201, first.content
    replay = client.post("/api/checkout/start", {}, format="json", headers=key)
    assert (replay.status_code, replay["Idempotent-Replayed"]) == (201, "true")

    key_clock.advance(3601)
    anew = client.post("/api/checkout/start", {}, format="json", headers=key)
    # Run again, not replayed: the start finds the cart's checkout (200, the same id) instead of the stored 201.
    assert (anew.status_code, anew.has_header("Idempotent-Replayed")) == (200, False), anew.content
    assert anew.json()["checkoutId"] == first.json()["checkoutId"]
