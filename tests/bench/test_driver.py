"""bench/driver.py: bounded by count, records outcomes by problem code, refuses non-loopback targets."""

from __future__ import annotations

import httpx
import pytest

from bench.driver import ClientState, assert_loopback, run


def test_refuses_non_loopback_targets():
    with pytest.raises(ValueError):
        assert_loopback("http://10.1.2.3:8000")
    assert_loopback("http://127.0.0.1:8000")


@pytest.mark.django_db(transaction=True)
def test_counts_requests_and_problem_codes(live_server):
    async def mixed(http: httpx.AsyncClient, state: ClientState) -> httpx.Response:
        return await http.get("/healthz" if state.sent % 2 == 0 else "/api/nowhere")

    result = run(base_url=live_server.url, request=mixed, name="mixed", clients=4, seconds=30, max_requests=40)
    assert result.requests == 40
    assert sum(result.statuses.values()) == 40
    assert result.errors["not_found"] == result.statuses[404] >= 16
    assert 0 < result.p50 <= result.p95 <= result.p99
