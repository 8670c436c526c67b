"""Property-based test of the cart services: random writes against a plain-Python model of the cart.

Every operation either succeeds and changes the cart exactly as the model says (and bumps the version
by one when lines changed), or raises one of the domain errors that apply to it and leaves the cart
exactly as it was. Runs against the real Redis and PostgreSQL (catalog and stock).
"""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cart.errors import CartValidationError, CartVersionConflict, CurrencyMismatch
from cart.services import cart_delete, cart_item_add, cart_item_remove, cart_item_set, cart_snapshot
from inventory.errors import InsufficientStock, ProductNotFound
from inventory.models import Product, Stock

MISSING_PRODUCT = 987_654_321
CART_ERRORS = (CartValidationError, CartVersionConflict, CurrencyMismatch, InsufficientStock, ProductNotFound)


def _catalog() -> dict[int, tuple[str, int]]:
    """Three usd products with little stock and one eur product: product id → (currency, available)."""
    rows = [("usd", 5), ("usd", 3), ("usd", 200), ("eur", 10)]
    out = {}
    for currency, on_hand in rows:
        p = Product.objects.create(sku=f"PROP-{uuid.uuid4().hex[:10]}", name="Prop", price=700, currency=currency)
        Stock.objects.create(product=p, on_hand=on_hand)
        out[p.id] = (currency, on_hand)
    return out


class CartMachine(RuleBasedStateMachine):
    catalog: dict[int, tuple[str, int]] = {}

    @initialize()
    def new_cart(self) -> None:
        self.key = f"t:prop-{uuid.uuid4().hex}"
        self.lines: dict[int, int] = {}
        self.version = 0
        self.max_line = int(settings.CARTFLOW_MAX_LINE_QUANTITY)

    # --- the model -------------------------------------------------------------------------------
    def _currency(self) -> str | None:
        return self.catalog[next(iter(self.lines))][0] if self.lines else None

    def _if_match(self, stale: bool) -> int | None:
        return None if not stale else self.version + 7

    def _applicable(self, pid: int, quantity: int, stale: bool, new_line: int) -> set[type]:
        """The errors that may answer this write (the script picks one; any of these is right)."""
        errors: set[type] = set()
        if stale:
            errors.add(CartVersionConflict)
        if quantity < 1 or quantity > self.max_line or new_line > self.max_line:
            errors.add(CartValidationError)
        if pid not in self.catalog:
            errors.add(ProductNotFound)
            return errors
        currency, available = self.catalog[pid]
        if self._currency() not in (None, currency) and not (len(self.lines) == 1 and pid in self.lines):
            errors.add(CurrencyMismatch)
        if new_line > available:
            errors.add(InsufficientStock)
        return errors

    def _apply(self, call, *, applicable: set[type], change, always_bumps: bool = False) -> None:  # noqa: ANN001
        before = cart_snapshot(key=self.key)
        try:
            call()
        except CART_ERRORS as exc:
            assert type(exc) in applicable, f"{type(exc).__name__} raised but only {applicable} apply"
            after = cart_snapshot(key=self.key)
            assert after.lines == before.lines and after.version == before.version, "a refused write changed the cart"
            return
        assert not applicable, f"succeeded although {applicable} apply"
        old = dict(self.lines)
        change()
        if self.lines != old or always_bumps:  # a set is a write even when it sets the same quantity
            self.version += 1

    # --- the rules -------------------------------------------------------------------------------
    products = st.sampled_from([0, 1, 2, 3, None])  # index into the catalog, or an unknown product

    def _pid(self, index: int | None) -> int:
        return MISSING_PRODUCT if index is None else sorted(self.catalog)[index]

    @rule(index=products, quantity=st.integers(min_value=-2, max_value=120), stale=st.booleans())
    def add(self, index: int | None, quantity: int, stale: bool) -> None:
        pid = self._pid(index)
        new_line = self.lines.get(pid, 0) + quantity
        self._apply(
            lambda: cart_item_add(key=self.key, product_id=pid, quantity=quantity, if_match=self._if_match(stale)),
            applicable=self._applicable(pid, quantity, stale, new_line),
            change=lambda: self.lines.__setitem__(pid, new_line),
        )

    @rule(index=products, quantity=st.integers(min_value=-1, max_value=120), stale=st.booleans())
    def set_line(self, index: int | None, quantity: int, stale: bool) -> None:
        pid = self._pid(index)
        if quantity == 0:
            applicable = {CartVersionConflict} if stale else set()
            self._apply(
                lambda: cart_item_set(key=self.key, product_id=pid, quantity=0, if_match=self._if_match(stale)),
                applicable=applicable,
                change=lambda: self.lines.pop(pid, None),
            )
            return
        self._apply(
            lambda: cart_item_set(key=self.key, product_id=pid, quantity=quantity, if_match=self._if_match(stale)),
            applicable=self._applicable(pid, quantity, stale, quantity),
            change=lambda: self.lines.__setitem__(pid, quantity),
            always_bumps=True,
        )

    @rule(index=products, stale=st.booleans())
    def remove(self, index: int | None, stale: bool) -> None:
        pid = self._pid(index)
        self._apply(
            lambda: cart_item_remove(key=self.key, product_id=pid, if_match=self._if_match(stale)),
            applicable={CartVersionConflict} if stale else set(),
            change=lambda: self.lines.pop(pid, None),
        )

    @rule(stale=st.booleans())
    def delete(self, stale: bool) -> None:
        self._apply(
            lambda: cart_delete(key=self.key, if_match=self._if_match(stale)),
            applicable={CartVersionConflict} if stale else set(),
            change=self.lines.clear,
        )

    @invariant()
    def matches_the_model(self) -> None:
        snap = cart_snapshot(key=self.key)
        assert {line.product_id: line.quantity for line in snap.lines} == self.lines
        assert snap.version == self.version
        assert snap.currency == self._currency()


@pytest.mark.django_db(transaction=True)
def test_random_cart_writes_match_the_model_and_refusals_change_nothing(redis_client) -> None:  # noqa: ANN001
    CartMachine.catalog = _catalog()
    CartMachine.TestCase.settings = hsettings(
        max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck)
    )
    CartMachine.TestCase().runTest()
