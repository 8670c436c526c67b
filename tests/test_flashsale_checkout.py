"""Flash sale through the real checkout endpoints: real Redis, real PostgreSQL, the Stripe emulator, threads."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import connection
from rest_framework.test import APIClient

from inventory.flashsale import flash_holders, flash_pool_state, flash_sale_start
from inventory.models import Reservation, Stock
from orders import saga as saga_mod
from orders.models import CheckoutSaga, Order
from tests.saga_support import invariants_hold, make_product

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
    gauge = PeakGauge(saga_mod.reservation_reserve)
    monkeypatch.setattr(saga_mod, "reservation_reserve", gauge)
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
