"""The service interface the checkout saga codes against: cart_snapshot, cart_clear, cart_ref_from_request."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from cart.identity import CartRef, cart_ref_from_request, token_hash, token_new
from cart.services import CartLine, cart_clear, cart_item_add, cart_snapshot

pytestmark = pytest.mark.django_db


def test_snapshot_of_an_unknown_cart_is_empty():
    snap = cart_snapshot(key="t:" + "0" * 64)
    assert (snap.lines, snap.version, snap.currency) == ((), 0, None)


def test_snapshot_lists_lines_by_product_id(make_product):
    a, b = make_product(), make_product()
    cart_item_add(key="u:7", product_id=b.id, quantity=2)
    cart_item_add(key="u:7", product_id=a.id, quantity=1)
    snap = cart_snapshot(key="u:7")
    assert snap.lines == (CartLine(product_id=a.id, quantity=1), CartLine(product_id=b.id, quantity=2))
    assert (snap.key, snap.version, snap.currency) == ("u:7", 2, "usd")


def test_clear_with_a_stale_version_leaves_the_cart(product):
    cart_item_add(key="u:8", product_id=product.id, quantity=1)
    assert cart_clear(key="u:8", if_version=5) is False
    assert cart_snapshot(key="u:8").lines
    assert cart_clear(key="u:8", if_version=1) is True
    snap = cart_snapshot(key="u:8")
    assert (snap.lines, snap.version, snap.currency) == ((), 2, None)
    assert cart_clear(key="u:8") is False  # nothing left to clear
    assert cart_clear(key="u:nobody") is False


def test_cart_ref_from_request():
    rf = RequestFactory()
    anonymous = rf.get("/api/cart")
    anonymous.user = AnonymousUser()
    assert cart_ref_from_request(anonymous) is None
    token = token_new()
    by_header = rf.get("/api/cart", headers={"X-Cart-Token": token})
    by_header.user = AnonymousUser()
    digest = token_hash(token)
    assert cart_ref_from_request(by_header) == CartRef(key=f"t:{digest}", token_hash=digest, user_id=None)
    by_cookie = rf.get("/api/cart")
    by_cookie.COOKIES["cart_token"] = token
    by_cookie.user = AnonymousUser()
    assert cart_ref_from_request(by_cookie).key == f"t:{digest}"
    malformed = rf.get("/api/cart", headers={"X-Cart-Token": "not-a-token"})
    malformed.user = AnonymousUser()
    assert cart_ref_from_request(malformed) is None


def test_cart_ref_for_a_signed_in_user(django_user_model):
    user = django_user_model.objects.create_user(username="lin", password="x")
    request = RequestFactory().get("/api/cart")
    request.user = user
    assert cart_ref_from_request(request) == CartRef(key=f"u:{user.pk}", token_hash=None, user_id=user.pk)
