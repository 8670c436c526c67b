"""Operations staff in Django admin: stock adjustments go through the service; reservations are read-only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from inventory.models import Product, Reservation, Stock, StockAdjustment
from inventory.services import ReserveLine, reservation_reserve

pytestmark = pytest.mark.django_db


@pytest.fixture
def stock() -> Stock:
    product = Product.objects.create(sku="INV-ADM-1", name="Widget", price=500)
    return Stock.objects.create(product=product, on_hand=10)


def adjust_url(stock: Stock) -> str:
    return reverse("admin:inventory_stock_adjust", args=[stock.pk])


def test_admin_adjustment_refuses_to_go_below_reserved(staff, stock):
    reservation_reserve(lines=[ReserveLine(stock.product_id, 8)], holder="co_admin")
    resp = staff.post(adjust_url(stock), {"delta": -3, "reason": "damaged"})
    assert resp.status_code == 200
    assert "checkouts hold 8 units" in resp.content.decode()
    stock.refresh_from_db()
    assert (stock.on_hand, stock.reserved) == (10, 8)
    assert not StockAdjustment.objects.exists()


def test_admin_adjustment_goes_through_the_service_with_an_audit_row(staff, stock):
    page = staff.get(adjust_url(stock))
    assert page.status_code == 200 and b"Adjust stock" in page.content
    resp = staff.post(adjust_url(stock), {"delta": -2, "reason": "write-off"})
    assert resp.status_code == 302
    stock.refresh_from_db()
    assert (stock.on_hand, stock.version) == (8, 1)
    adj = StockAdjustment.objects.get()
    assert (adj.delta, adj.reason, adj.who, adj.on_hand_after) == (-2, "write-off", staff.user, 8)
    assert staff.get(reverse("admin:inventory_stockadjustment_changelist")).status_code == 200


def test_admin_rejects_a_zero_change_and_anonymous_users(client, staff, stock):
    assert staff.post(adjust_url(stock), {"delta": 0, "reason": "x"}).status_code == 200
    assert not StockAdjustment.objects.exists()
    client.logout()
    assert client.post(adjust_url(stock), {"delta": 5, "reason": "x"}).status_code == 302  # to the login page
    stock.refresh_from_db()
    assert stock.on_hand == 10


def test_reservations_are_listed_filtered_and_read_only(staff, stock):
    reservation_reserve(lines=[ReserveLine(stock.product_id, 1)], holder="co_list")
    url = reverse("admin:inventory_reservation_changelist")
    for query in ("", "?status__exact=HELD", "?expiry=past", "?expiry=future"):
        assert staff.get(url + query).status_code == 200
    assert b"co_list" in staff.get(url + "?status__exact=HELD").content
    assert b"co_list" not in staff.get(url + "?expiry=past").content
    r = Reservation.objects.get()
    change = staff.post(
        reverse("admin:inventory_reservation_change", args=[r.pk]), {"quantity": 5, "status": "RELEASED"}
    )
    assert change.status_code == 403
    r.refresh_from_db()
    assert (r.quantity, r.status) == (1, "HELD")
    assert staff.get(reverse("admin:inventory_stock_change", args=[stock.pk])).status_code == 200
