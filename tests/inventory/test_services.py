"""reservation_reserve / release / commit / extend and stock_adjust against the real PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from cartflow.invariants import run_all
from inventory.errors import InsufficientStock, ReservationStateError, StockBelowReserved
from inventory.models import Product, Reservation, Stock, StockAdjustment
from inventory.services import (
    ReserveLine,
    reservation_commit,
    reservation_extend,
    reservation_release,
    reservation_reserve,
    reservations_for_holder,
    stock_adjust,
)

pytestmark = pytest.mark.django_db
_skus = itertools.count(1)


@pytest.fixture
def make_product():
    def make(on_hand: int = 10) -> Product:
        product = Product.objects.create(sku=f"INV-S-{next(_skus):05d}", name="Thing", price=500)
        Stock.objects.create(product=product, on_hand=on_hand)
        return product

    return make


INVENTORY_INVARIANTS = {"stock_bounds", "reserved_matches_held", "no_stale_holds", "product_has_stock"}


def assert_inventory_invariants() -> None:
    """Inventory's own invariants only: these tests commit reservations with no order behind them, which
    the orders app's invariants rightly flag."""
    results = run_all()
    assert INVENTORY_INVARIANTS <= results.keys()
    assert {name: v for name, v in results.items() if name in INVENTORY_INVARIANTS and v} == {}


def stock_of(product: Product) -> tuple[int, int]:
    s = Stock.objects.get(product=product)
    return s.on_hand, s.reserved


def test_reserve_holds_every_line_and_returns_infos(make_product):
    a, b = make_product(5), make_product(5)
    infos = reservation_reserve(lines=[ReserveLine(b.id, 2), ReserveLine(a.id, 1)], holder="co_1", ttl_seconds=60)
    assert [(i.product_id, i.quantity, i.status) for i in infos] == [(a.id, 1, "HELD"), (b.id, 2, "HELD")]
    assert all(i.holder == "co_1" for i in infos)
    assert timedelta(seconds=55) < infos[0].expires_at - timezone.now() <= timedelta(seconds=60)
    assert stock_of(a) == (5, 1) and stock_of(b) == (5, 2)
    call_command("check_invariants")


def test_default_ttl_is_the_setting(make_product, settings):
    settings.CARTFLOW_RESERVATION_TTL_SECONDS = 123
    [info] = reservation_reserve(lines=[ReserveLine(make_product().id, 1)], holder="co_ttl")
    assert timedelta(seconds=118) < info.expires_at - timezone.now() <= timedelta(seconds=123)


def test_two_lines_of_one_product_are_summed_before_the_check(make_product):
    """Medusa #16502: 2 + 2 of a product with 3 on hand must fail, not pass each check alone."""
    p = make_product(3)
    with pytest.raises(InsufficientStock) as exc:
        reservation_reserve(lines=[ReserveLine(p.id, 2), ReserveLine(p.id, 2)], holder="co_sum")
    assert exc.value.extensions == {"productId": p.id, "available": 3}
    assert stock_of(p) == (3, 0)
    assert not Reservation.objects.exists()

    [info] = reservation_reserve(lines=[ReserveLine(p.id, 1), ReserveLine(p.id, 2)], holder="co_sum")
    assert info.quantity == 3
    assert stock_of(p) == (3, 3)


def test_insufficient_stock_undoes_the_lines_already_reserved(make_product):
    a, b = make_product(5), make_product(1)
    with pytest.raises(InsufficientStock) as exc:
        reservation_reserve(lines=[ReserveLine(a.id, 2), ReserveLine(b.id, 2)], holder="co_x")
    assert exc.value.code == "insufficient_stock" and exc.value.status == 409
    assert exc.value.extensions == {"productId": b.id, "available": 1}
    assert stock_of(a) == (5, 0)
    assert list(Reservation.objects.values_list("status", flat=True)) == ["RELEASED"]
    call_command("check_invariants")


def test_reserve_is_idempotent_per_holder(make_product):
    a, b = make_product(5), make_product(5)
    first = reservation_reserve(lines=[ReserveLine(a.id, 2)], holder="co_i")
    again = reservation_reserve(lines=[ReserveLine(a.id, 2)], holder="co_i")
    assert again == first
    assert stock_of(a) == (5, 2)
    # A saga re-running the step with the full cart reserves only what is missing.
    both = reservation_reserve(lines=[ReserveLine(a.id, 2), ReserveLine(b.id, 1)], holder="co_i")
    assert [(i.product_id, i.quantity) for i in both] == [(a.id, 2), (b.id, 1)]
    assert stock_of(a) == (5, 2) and stock_of(b) == (5, 1)


def test_reserve_with_a_different_quantity_for_a_held_product_is_refused(make_product):
    a = make_product(5)
    reservation_reserve(lines=[ReserveLine(a.id, 2)], holder="co_q")
    with pytest.raises(ReservationStateError):
        reservation_reserve(lines=[ReserveLine(a.id, 3)], holder="co_q")
    assert stock_of(a) == (5, 2)


def test_release_gives_units_back_and_is_safe_twice(make_product):
    a, b = make_product(5), make_product(5)
    reservation_reserve(lines=[ReserveLine(a.id, 2), ReserveLine(b.id, 3)], holder="co_r")
    assert reservation_release(holder="co_r") == 5
    assert reservation_release(holder="co_r") == 0
    assert stock_of(a) == (5, 0) and stock_of(b) == (5, 0)
    assert {i.status for i in reservations_for_holder(holder="co_r")} == {"RELEASED"}
    assert reservation_release(holder="nobody") == 0
    call_command("check_invariants")


def test_released_holder_can_reserve_again(make_product):
    a = make_product(5)
    reservation_reserve(lines=[ReserveLine(a.id, 2)], holder="co_again")
    reservation_release(holder="co_again", status="EXPIRED")
    [info] = reservation_reserve(lines=[ReserveLine(a.id, 4)], holder="co_again")
    assert (info.status, info.quantity) == ("HELD", 4)
    assert stock_of(a) == (5, 4)
    assert Reservation.objects.count() == 1


def test_commit_sells_the_units_and_is_safe_twice(make_product):
    a, b = make_product(5), make_product(5)
    reservation_reserve(lines=[ReserveLine(a.id, 2), ReserveLine(b.id, 1)], holder="co_c")
    assert reservation_commit(holder="co_c") == 3
    assert reservation_commit(holder="co_c") == 0
    assert stock_of(a) == (3, 0) and stock_of(b) == (4, 0)
    # A release after the sale leaves the sold rows alone.
    assert reservation_release(holder="co_c") == 0
    assert {i.status for i in reservations_for_holder(holder="co_c")} == {"COMMITTED"}
    # Re-running the reserve step after the sale does not reserve again.
    reservation_reserve(lines=[ReserveLine(a.id, 2), ReserveLine(b.id, 1)], holder="co_c")
    assert stock_of(a) == (3, 0)
    assert_inventory_invariants()


def test_commit_after_release_is_refused(make_product):
    a = make_product(5)
    reservation_reserve(lines=[ReserveLine(a.id, 2)], holder="co_cr")
    reservation_release(holder="co_cr")
    with pytest.raises(ReservationStateError):
        reservation_commit(holder="co_cr")
    assert stock_of(a) == (5, 0)
    with pytest.raises(ReservationStateError):
        reservation_commit(holder="never-reserved")


def test_extend_moves_expiry_forward_only(make_product):
    a = make_product(5)
    [info] = reservation_reserve(lines=[ReserveLine(a.id, 1)], holder="co_e", ttl_seconds=60)
    later = info.expires_at + timedelta(minutes=10)
    assert reservation_extend(holder="co_e", until=later) == 1
    assert reservations_for_holder(holder="co_e")[0].expires_at == later
    assert reservation_extend(holder="co_e", until=later - timedelta(minutes=5)) == 0
    assert reservations_for_holder(holder="co_e")[0].expires_at == later


def test_stock_adjust_audits_and_refuses_to_go_below_reserved(make_product, django_user_model):
    a = make_product(5)
    staff = django_user_model.objects.create_user(username="ops", password="x")
    assert stock_adjust(product_id=a.id, delta=7, reason="restock", user=staff) == 12
    reservation_reserve(lines=[ReserveLine(a.id, 10)], holder="co_adj")
    with pytest.raises(StockBelowReserved) as exc:
        stock_adjust(product_id=a.id, delta=-3, reason="write-off")
    assert exc.value.status == 409 and exc.value.extensions == {"productId": a.id, "onHand": 12, "reserved": 10}
    assert stock_adjust(product_id=a.id, delta=-2, reason="write-off") == 10
    assert stock_of(a) == (10, 10)
    audit = list(StockAdjustment.objects.order_by("id").values_list("delta", "reason", "who_id", "on_hand_after"))
    assert audit == [(7, "restock", staff.pk, 12), (-2, "write-off", None, 10)]


def test_stock_adjust_with_a_reference_applies_once_per_product(make_product):
    """A restock named by what it is for (a cancelled order) is applied once, however often it is asked."""
    a, b = make_product(5), make_product(5)
    assert stock_adjust(product_id=a.id, delta=2, reason="order cancelled", reference="order:ord_x:cancel") == 7
    assert stock_adjust(product_id=a.id, delta=2, reason="order cancelled", reference="order:ord_x:cancel") == 7
    assert stock_adjust(product_id=b.id, delta=1, reason="order cancelled", reference="order:ord_x:cancel") == 6
    assert stock_adjust(product_id=a.id, delta=2, reason="plain restock") == 9  # no reference: every time
    assert stock_adjust(product_id=a.id, delta=2, reason="plain restock") == 11
    rows = StockAdjustment.objects.filter(reference="order:ord_x:cancel").values_list("product_id", "delta")
    assert sorted(rows) == sorted([(a.id, 2), (b.id, 1)])


def test_a_new_holder_that_is_not_new_still_holds_nothing_twice(make_product):
    """``new_holder`` skips the lookup of the holder's rows; if a row exists all the same (a caller's
    mistake, or a concurrent reserve of the same holder), the unique index turns it into "already held"."""
    a, b = make_product(5), make_product(5)
    reservation_reserve(lines=[ReserveLine(a.id, 2)], holder="co_new")
    held = reservation_reserve(lines=[ReserveLine(a.id, 2), ReserveLine(b.id, 1)], holder="co_new", new_holder=True)
    assert sorted((r.product_id, r.quantity, r.status) for r in held) == sorted([(a.id, 2, "HELD"), (b.id, 1, "HELD")])
    assert stock_of(a) == (5, 2) and stock_of(b) == (5, 1)
    assert Reservation.objects.filter(holder="co_new").count() == 2
