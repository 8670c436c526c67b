"""SQL statements per endpoint, with budgets: a change that adds a query to a hot path fails here.

The budgets are the counts measured when they were set (README.md, "Performance", lists them); the
flash-sale ``sold_out`` answer and the cart read must not touch the database at all.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from inventory.flashsale import flash_sale_start, flash_tokens_consume, flash_tokens_take
from tests.support.saga import guest_with_cart, make_product

pytestmark = pytest.mark.django_db(transaction=True)

BUDGETS = {
    "product_list": 2,
    "product_detail": 1,
    "cart_add": 1,
    "cart_get": 0,
    # Statements, BEGIN/COMMIT included. Start: the saga born "about to reserve" with its log rows (one
    # statement); one reserve statement; the order, its lines, "reserve done", "create_order done" and the
    # lease release (one statement in a transaction, rolled back if the saga's version moved). No Stripe
    # call (the PaymentIntent is created at confirm). Was 8 while the start created the PaymentIntent, 49 before
    # the merged writes, 33 before payments' record became one upsert+attempt statement (round 3), 25 before
    # the response stopped re-reading the order and hold it had just written, 23 before "reserve done"
    # moved into the order's transaction, 19 before each saga write became one statement (UPDATE + log
    # INSERT in a writable CTE, orders/saga/persistence.py), 17 before the saga INSERT became one statement
    # too and a new checkout stopped looking up reservations its fresh id cannot have, 13 before the order's
    # PaymentIntent UPDATE rode in the saga's "done" statement, 10 before the order and its lines did too.
    "checkout_start": 6,
    # Confirm: lease, "about to charge", Stripe (create and confirm in one call), payments' record, "charge
    # done" + "about to confirm" + the intent recorded + the order paid (one statement), the commit of the
    # hold (its own short transaction), "confirm done" + the order confirmed + outbox + outbound event +
    # lease release (one statement), the fresh order read. Was 41,
    # then 31 before payments' record became one statement (round 3), 26 before each saga write became one
    # statement, 21 before the lease was taken on the saga the view had just read (no second read), 20 before
    # "charge done" and "confirm done" carried their order UPDATE and outbox INSERT in the saga's statement.
    "checkout_confirm": 13,
    "checkout_start_sold_out": 0,
}


def _show(name: str, ctx: CaptureQueriesContext) -> str:
    return f"{name}: {len(ctx.captured_queries)} queries\n" + "\n".join(q["sql"][:200] for q in ctx.captured_queries)


def test_catalog_reads_stay_within_budget(django_assert_max_num_queries):
    product = make_product()
    client = APIClient()
    client.get("/api/products")  # warm whatever is cached per process
    with django_assert_max_num_queries(BUDGETS["product_list"]):
        assert client.get("/api/products").status_code == 200
    client.get(f"/api/products/{product.id}")
    with django_assert_max_num_queries(BUDGETS["product_detail"]):
        assert client.get(f"/api/products/{product.id}").status_code == 200


def test_cart_add_reads_stock_once_and_cart_get_touches_no_table(django_assert_max_num_queries):
    product = make_product(on_hand=50)
    client = guest_with_cart((product, 1))  # the catalog row is cached from here on
    with django_assert_max_num_queries(BUDGETS["cart_add"]):
        response = client.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json")
    assert response.status_code == 201, response.content
    with django_assert_max_num_queries(BUDGETS["cart_get"]):
        response = client.get("/api/cart")
    assert response.status_code == 200 and response.json()["itemCount"] == 2


def test_checkout_start_and_confirm_stay_within_budget(stripe_emulator, django_assert_max_num_queries):
    product = make_product(on_hand=50)
    client = guest_with_cart((product, 1))
    with django_assert_max_num_queries(BUDGETS["checkout_start"]) as ctx:
        response = client.post("/api/checkout/start", {}, format="json")
    assert response.status_code == 201, _show("start", ctx)
    # The start renders what it just wrote without reading it back: the same body a fresh read gives.
    started = response.json()
    detail = client.get(f"/api/checkout/{started['checkoutId']}").json()
    assert {key: detail[key] for key in started} == started
    body = {"paymentMethodId": "pm_card_visa", "checkoutId": started["checkoutId"]}
    with django_assert_max_num_queries(BUDGETS["checkout_confirm"]) as ctx:
        response = client.post("/api/checkout/confirm", body, format="json")
    assert response.status_code == 200, _show("confirm", ctx)


def test_flash_sale_sold_out_is_answered_without_the_database():
    product = make_product(on_hand=2)
    client = guest_with_cart((product, 1))
    flash_sale_start(product_id=product.id)
    flash_tokens_take(holder="someone-else", lines=[(product.id, 2)])
    flash_tokens_consume(holder="someone-else")
    with CaptureQueriesContext(connection) as ctx:
        response = client.post("/api/checkout/start", {}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "sold_out", response.content
    assert len(ctx.captured_queries) == BUDGETS["checkout_start_sold_out"], _show("sold_out", ctx)
