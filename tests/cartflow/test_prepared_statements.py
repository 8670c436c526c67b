"""A connection prepares the statements it runs often (cartflow/settings.py, CARTFLOW_DB_PREPARE_THRESHOLD):
after a few checkout starts on one connection, PostgreSQL holds the start's statements prepared, so it no
longer parses and plans them on every start."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.support.saga import guest_with_cart, make_product

pytestmark = pytest.mark.django_db


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
        return [row[0] for row in cursor.fetchall()]


def test_a_checkout_start_statements_are_prepared_after_a_few_starts(settings):
    settings.CARTFLOW_MAX_ACTIVE_CHECKOUTS_PER_CLIENT = 0  # six guests, one address
    product = make_product(on_hand=100)
    assert connection.settings_dict["OPTIONS"]["prepare_threshold"] == 5
    for _ in range(6):  # one more than the threshold
        assert guest_with_cart((product, 1)).post("/api/checkout/start").status_code == 201
    statements = _prepared()
    assert any("UPDATE inventory_stock" in s for s in statements), statements  # the reserve
    assert any('INSERT INTO "orders_checkoutsaga"' in s for s in statements), statements  # the saga's birth
