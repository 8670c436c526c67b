"""A Redis outage: cart endpoints answer 503 cart_unavailable fast, and heal when Redis returns.

Uses its own redis-server (random free port) or a socket that never answers; never the shared one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import redis as redis_lib
from rest_framework.test import APIClient

from tests.cart.conftest import add, adopt_token

pytestmark = pytest.mark.django_db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis_lib.Redis(port=port, socket_timeout=0.2)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis_lib.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("own redis-server did not start")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(5)


def _point_cache_at(settings, url: str) -> None:  # noqa: ANN001
    caches = {name: dict(cfg) for name, cfg in settings.CACHES.items()}
    caches["default"]["LOCATION"] = url
    settings.CACHES = caches
    settings.REDIS_URL = url


def _assert_unavailable(resp) -> None:  # noqa: ANN001
    assert resp.status_code == 503, resp.content
    assert resp.json()["code"] == "cart_unavailable"
    assert resp["Content-Type"] == "application/problem+json"
    assert int(resp["Retry-After"]) >= 1


def _assert_bounded_by_socket_timeouts(settings) -> None:  # noqa: ANN001
    """What keeps an outage answer quick: every Redis connection of the cart has connect and read timeouts
    (CARTFLOW_REDIS_SOCKET_TIMEOUT), so a call fails within them instead of waiting on a dead peer."""
    from django_redis import get_redis_connection

    kwargs = get_redis_connection("default").connection_pool.connection_kwargs
    assert 0 < kwargs["socket_timeout"] <= settings.REDIS_SOCKET_TIMEOUT
    assert 0 < kwargs["socket_connect_timeout"] <= settings.REDIS_SOCKET_TIMEOUT


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")
def test_stopped_redis_gives_503_and_restarting_it_heals(product, settings):
    port = _free_port()
    proc = _start_redis(port)
    try:
        _point_cache_at(settings, f"redis://127.0.0.1:{port}/0")
        guest = APIClient()
        token = adopt_token(guest, add(guest, product.id, 2))
        _stop(proc)

        for call in (
            lambda: guest.get("/api/cart"),
            lambda: add(guest, product.id, 1),
            lambda: guest.put(f"/api/cart/items/{product.id}", {"quantity": 3}, format="json"),
            lambda: guest.delete(f"/api/cart/items/{product.id}"),
            lambda: guest.delete("/api/cart"),
        ):
            _assert_unavailable(call())
        # The catalog keeps working without its cache.
        assert guest.get(f"/api/products/{product.id}").status_code == 200

        proc = _start_redis(port)
        healed = guest.get("/api/cart")
        assert healed.status_code == 200  # (no persistence: the restarted Redis is empty)
        resp = add(guest, product.id, 1)
        assert resp.status_code == 201 and resp.json()["token"] != token
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_a_redis_that_never_answers_gives_503_once_its_socket_timeout_lapses(product, settings):
    """A black hole (TCP accepted by the kernel, no reply) exercises the socket timeouts."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        port = hole.getsockname()[1]
        _point_cache_at(settings, f"redis://127.0.0.1:{port}/0")
        _assert_bounded_by_socket_timeouts(settings)
        guest = APIClient()
        _assert_unavailable(guest.get("/api/cart", headers={"X-Cart-Token": "a" * 43}))
        _assert_unavailable(add(guest, product.id, 1))
