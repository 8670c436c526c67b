"""Real races: threads, each on its own PostgreSQL connection, against one hot stock row."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from inventory.errors import InsufficientStock, InventoryContention, ReservationStateError
from inventory.models import Product, Reservation, Stock, StockAdjustment
from inventory.services import (
    ReserveLine,
    reservation_commit,
    reservation_release,
    reservation_reserve,
    stock_adjust,
)
from tests.support.threads import race

pytestmark = pytest.mark.django_db(transaction=True)
_skus = itertools.count(1)
THREADS = 40


def make_product(on_hand: int) -> Product:
    product = Product.objects.create(sku=f"INV-C-{next(_skus):05d}", name="Hot thing", price=500)
    Stock.objects.create(product=product, on_hand=on_hand)
    return product


@pytest.fixture
def patient_retries(settings):
    """A budget large enough that every caller eventually gets an answer from the stock row itself."""
    settings.CARTFLOW_RESERVE_MAX_ATTEMPTS = 400
    settings.CARTFLOW_RESERVE_MAX_SECONDS = 30.0


def test_hot_product_demand_over_supply_reserves_exactly_the_stock(patient_retries):
    stock = 30
    product = make_product(stock)
    results = race(THREADS, lambda i: reservation_reserve(lines=[ReserveLine(product.id, 1)], holder=f"hot-{i}"))

    won = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, InsufficientStock)]
    assert len(won) == stock, results
    assert len(refused) == THREADS - stock, [r for r in results if not isinstance(r, list | InsufficientStock)]
    assert all(e.extensions == {"productId": product.id, "available": 0} for e in refused)
    row = Stock.objects.get(product=product)
    assert (row.on_hand, row.reserved) == (stock, stock)
    assert Reservation.objects.filter(product=product, status="HELD").count() == stock
    call_command("check_invariants")


def test_multi_line_reservations_under_contention_are_all_or_nothing(patient_retries):
    """A has room for everyone, B for 12: the 28 losers reserved A first and must have given it back."""
    a, b = make_product(THREADS), make_product(12)

    def reserve(i: int) -> object:
        lines = [ReserveLine(a.id, 1), ReserveLine(b.id, 1)]
        return reservation_reserve(lines=lines if i % 2 else lines[::-1], holder=f"multi-{i}")

    results = race(THREADS, reserve)
    won = {f"multi-{i}" for i, r in enumerate(results) if isinstance(r, list)}
    lost = {f"multi-{i}" for i, r in enumerate(results) if isinstance(r, InsufficientStock)}
    assert len(won) == 12 and len(lost) == THREADS - 12, results
    assert not Reservation.objects.filter(holder__in=lost, status="HELD").exists()
    held = Reservation.objects.filter(status="HELD")
    assert sorted(held.values_list("holder", "product_id")) == sorted(
        [(h, a.id) for h in won] + [(h, b.id) for h in won]
    )
    assert Stock.objects.get(product=a).reserved == 12
    assert Stock.objects.get(product=b).reserved == 12
    call_command("check_invariants")


class VersionBumper:
    """Other writers that keep the stock row changing: each, on its own connection, holds an uncommitted
    version bump for ``hold`` seconds, commits, and starts the next one.

    Two writers take turns so the row is never unlocked: while one holds its bump the other already waits
    in PostgreSQL's lock queue and gets the row the moment the first commits. With a single writer, a busy
    machine let the reserver read and update in the gap between its commit and its next bump and win a
    race the test needs it to lose (9 of 40 runs under CPU load)."""

    def __init__(self, stock_id: int, hold: float = 0.05, writers: int = 2) -> None:
        self.stock_id, self.hold = stock_id, hold
        self.stop = threading.Event()
        self.started = threading.Event()
        self.bumps = 0
        self._count = threading.Lock()
        self.threads = [threading.Thread(target=self._run) for _ in range(writers)]

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                with transaction.atomic(), connection.cursor() as cur:
                    cur.execute("UPDATE inventory_stock SET version = version + 1 WHERE id = %s", [self.stock_id])
                    self.started.set()
                    time.sleep(self.hold)
                with self._count:
                    self.bumps += 1
        finally:
            connection.close()

    def __enter__(self) -> VersionBumper:
        self.threads[0].start()
        assert self.started.wait(5)
        for thread in self.threads[1:]:  # they queue behind the first one's bump
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def test_retry_exhaustion_raises_inventory_contention_and_holds_nothing(settings):
    settings.CARTFLOW_RESERVE_MAX_ATTEMPTS = 3
    settings.CARTFLOW_RESERVE_MAX_SECONDS = 10.0
    a, hot = make_product(10), make_product(10)
    with VersionBumper(Stock.objects.get(product=hot).id) as bumper:
        with pytest.raises(InventoryContention) as exc:
            reservation_reserve(lines=[ReserveLine(a.id, 1), ReserveLine(hot.id, 1)], holder="busy-1")
    assert bumper.bumps >= 3
    assert exc.value.status == 503 and exc.value.retry_after == 1
    assert exc.value.extensions == {"productId": hot.id}
    assert not Reservation.objects.filter(status="HELD").exists()
    assert list(Stock.objects.order_by("id").values_list("reserved", flat=True)) == [0, 0]
    call_command("check_invariants")


def test_retry_budget_is_bounded_in_time(settings, monkeypatch):
    """CARTFLOW_RESERVE_MAX_SECONDS ends the retries long before CARTFLOW_RESERVE_MAX_ATTEMPTS would: the
    attempts are counted (through the real ``_attempts``), not timed."""
    from inventory import services

    settings.CARTFLOW_RESERVE_MAX_ATTEMPTS = 2_000
    settings.CARTFLOW_RESERVE_MAX_SECONDS = 0.3
    settings.CARTFLOW_RESERVE_BACKOFF_MAX_SECONDS = 0.005
    made: list[int] = []
    real_attempts = services._attempts

    def counted():  # noqa: ANN202
        for attempt in real_attempts():
            made.append(attempt)
            yield attempt

    monkeypatch.setattr(services, "_attempts", counted)
    hot = make_product(10)
    # The writers keep the row busy, but on a loaded machine PostgreSQL may schedule the reserver's backend
    # before the next writer's in the instant between two bumps, and the reserve wins (about 1 run in 3
    # with a load of 8 on 2 cores). The claim is about how a LOSING reserve ends, so a lucky win is given
    # back and the race run again; five wins in a row would mean the writers hold nothing.
    with VersionBumper(Stock.objects.get(product=hot).id, hold=0.05, writers=3):
        for run in range(5):
            made.clear()
            try:
                reservation_reserve(lines=[ReserveLine(hot.id, 1)], holder=f"busy-{run}")
            except InventoryContention:
                break
            reservation_release(holder=f"busy-{run}")
        else:
            pytest.fail("the reserve won five races against writers that never let go of the row")
    assert 1 < len(made) < 2_000, len(made)
    assert not Reservation.objects.filter(holder=f"busy-{run}").exists()


def test_a_lost_race_is_retried_until_it_wins():
    hot = make_product(10)
    with VersionBumper(Stock.objects.get(product=hot).id, hold=0.02) as bumper:
        time.sleep(0.05)
        result: dict[str, object] = {}

        def stop_soon() -> None:
            time.sleep(0.1)
            bumper.stop.set()

        stopper = threading.Thread(target=stop_soon)
        stopper.start()
        result["infos"] = reservation_reserve(lines=[ReserveLine(hot.id, 2)], holder="patient")
        stopper.join()
    assert [i.quantity for i in result["infos"]] == [2]
    assert Stock.objects.get(product=hot).reserved == 2


def test_commit_racing_release_sells_or_returns_each_hold_whole():
    """Each of 20 two-product holds is committed by one thread while another releases it: every hold ends
    wholly COMMITTED (its units gone from on_hand) or wholly RELEASED (its units free again), never half, and
    the stock rows add up to exactly that."""
    a, b = make_product(100), make_product(100)
    holders = [f"co_race_{i}" for i in range(20)]
    for holder in holders:
        reservation_reserve(lines=[ReserveLine(a.id, 2), ReserveLine(b.id, 1)], holder=holder)

    def work(i: int) -> object:
        holder = holders[i // 2]
        if i % 2 == 0:
            try:
                return ("commit", reservation_commit(holder=holder))
            except ReservationStateError:
                return ("commit", "refused")
        return ("release", reservation_release(holder=holder))

    results = race(2 * len(holders), work)
    assert not [r for r in results if isinstance(r, Exception)], results
    sold_units_a = 0
    for n, holder in enumerate(holders):
        statuses = set(Reservation.objects.filter(holder=holder).values_list("status", flat=True))
        assert statuses in ({"COMMITTED"}, {"RELEASED"}), (holder, statuses)
        committed = results[2 * n][1]
        if statuses == {"COMMITTED"}:
            assert committed == 3  # this thread's commit sold both lines
            sold_units_a += 2
        else:
            assert committed == "refused"
    stock_a, stock_b = Stock.objects.get(product=a), Stock.objects.get(product=b)
    assert (stock_a.on_hand, stock_a.reserved) == (100 - sold_units_a, 0)
    assert (stock_b.on_hand, stock_b.reserved) == (100 - sold_units_a // 2, 0)
    # (check_invariants would also compare committed stock with confirmed orders, which this test has none of.)


def test_a_referenced_restock_raced_by_many_threads_is_applied_once(patient_retries):
    """Two staff cancelling one order at once (and more): the stock goes back once, with one audit row."""
    product = make_product(on_hand=4)
    results = race(
        8, lambda i: stock_adjust(product_id=product.id, delta=3, reason="cancelled", reference="order:o1:cancel")
    )
    assert results == [7] * 8, results
    assert Stock.objects.get(product=product).on_hand == 7
    assert StockAdjustment.objects.filter(product=product, reference="order:o1:cancel").count() == 1
