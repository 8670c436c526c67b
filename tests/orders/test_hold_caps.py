"""Hold caps over HTTP (orders/saga/hold_caps.py): one client (the signed-in user, else the address) may hold
only so many unfinished checkouts and so many units of one product, whatever cart tokens it mints; and the
caps hold when its starts race on separate database connections."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from cart.identity import cart_ref_for_token
from inventory.flashsale import flash_pool_state, flash_sale_start
from inventory.models import Reservation
from orders.models import CheckoutSaga
from orders.saga.driver import checkout_start
from tests.support.saga import invariants_hold, make_product, stock
from tests.support.threads import race

pytestmark = pytest.mark.django_db(transaction=True)
_addresses = itertools.count(1)


def an_address() -> str:
    n = next(_addresses)
    return f"10.77.{n // 256 % 256}.{n % 256}"


def guest(address: str, *items, **headers: str) -> APIClient:  # noqa: ANN002
    """A new guest cart (a fresh token) from ``address`` holding ``items`` ((product, quantity) pairs)."""
    client = APIClient(REMOTE_ADDR=address, **headers)
    for product, quantity in items:
        response = client.post("/api/cart/items", {"productId": product.id, "quantity": quantity}, format="json")
        assert response.status_code == 201, response.content
        if "HTTP_X_CART_TOKEN" not in client._credentials:
            client.credentials(HTTP_X_CART_TOKEN=response.json()["token"])
    return client


def start(client: APIClient):  # noqa: ANN201
    return client.post("/api/checkout/start", {}, format="json")


@pytest.fixture
def caps(settings):  # noqa: ANN201
    """Set the three caps for one test (0 = off)."""

    def set_caps(*, checkouts: int = 0, units: int = 0, flash: int = 0) -> None:
        settings.CARTFLOW_MAX_ACTIVE_CHECKOUTS_PER_CLIENT = checkouts
        settings.CARTFLOW_MAX_UNITS_PER_PRODUCT = units
        settings.CARTFLOW_FLASH_MAX_UNITS_PER_BUYER = flash

    return set_caps


# --- unfinished checkouts per client --------------------------------------------------------------------


def test_new_cart_tokens_do_not_dodge_the_cap_on_unfinished_checkouts(caps):
    caps(checkouts=2)
    product = make_product(on_hand=50)
    here = an_address()
    first, second, third = (guest(here, (product, 1)) for _ in range(3))
    started = start(first)
    assert started.status_code == 201
    assert start(second).status_code == 201

    refused = start(third)
    assert refused.status_code == 429, refused.content
    body = refused.json()
    assert refused["Content-Type"] == "application/problem+json"
    assert (body["code"], body["status"], body["limit"]) == ("too_many_active_checkouts", 429, 2)
    # Retry-After: until the oldest hold expires (CARTFLOW_RESERVATION_TTL_SECONDS, 900 s, from just now).
    assert 850 <= int(refused["Retry-After"]) <= 900
    assert CheckoutSaga.objects.count() == 2 and stock(product) == (50, 2)

    # Another address is another client; a finished (cancelled) checkout frees its place.
    assert start(guest(an_address(), (product, 1))).status_code == 201
    assert first.post(f"/api/checkout/{started.json()['checkoutId']}/cancel").status_code == 200
    assert start(third).status_code == 201
    invariants_hold()


def test_a_second_start_of_the_same_cart_at_the_cap_returns_its_active_checkout(caps):
    caps(checkouts=1, units=1)
    product = make_product()
    client = guest(an_address(), (product, 1))
    first = start(client)
    assert first.status_code == 201
    again = start(client)
    assert again.status_code == 200, again.content
    assert again.json()["checkoutId"] == first.json()["checkoutId"]


def test_the_cap_counts_the_peer_address_not_x_forwarded_for(caps):
    caps(checkouts=1)
    product = make_product()
    here = an_address()
    assert start(guest(here, (product, 1), HTTP_X_FORWARDED_FOR="203.0.113.1")).status_code == 201
    forged = start(guest(here, (product, 1), HTTP_X_FORWARDED_FOR="203.0.113.2"))
    assert forged.status_code == 429 and forged.json()["code"] == "too_many_active_checkouts"


def test_behind_a_trusted_proxy_each_real_client_has_its_own_cap(caps, settings):
    settings.CARTFLOW_TRUSTED_PROXIES = 1
    caps(checkouts=1)
    product = make_product()
    proxy = an_address()  # every request arrives from the load balancer

    def via_proxy(client_ip: str):  # noqa: ANN202
        return start(guest(proxy, (product, 1), HTTP_X_FORWARDED_FOR=f"6.6.6.6, {client_ip}"))

    assert via_proxy("203.0.113.1").status_code == 201
    assert via_proxy("203.0.113.2").status_code == 201  # another shopper behind the same balancer
    assert via_proxy("203.0.113.1").status_code == 429  # the first one again, with a new cart token


def test_a_signed_in_buyer_is_counted_as_the_user_not_the_address(caps):
    caps(checkouts=1)
    product = make_product()
    here = an_address()
    assert start(guest(here, (product, 1))).status_code == 201  # the address holds its one checkout
    user = get_user_model().objects.create_user("ann", password="pw-for-tests-only")
    client = APIClient(REMOTE_ADDR=here)
    client.force_authenticate(user)
    assert client.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json").status_code == 201
    assert start(client).status_code == 201
    assert CheckoutSaga.objects.get(user=user).client_key == f"user:{user.pk}"


def test_parallel_starts_of_one_client_never_pass_the_cap(caps):
    """Eight new carts of one address start at once, each on its own connection: exactly the cap passes."""
    caps(checkouts=3)
    product = make_product(on_hand=100)
    here = an_address()
    clients = [guest(here, (product, 1)) for _ in range(8)]
    results = race(len(clients), lambda i: start(clients[i]))
    codes = sorted(r.status_code for r in results)
    assert codes == [201] * 3 + [429] * 5, [getattr(r, "content", r) for r in results]
    assert CheckoutSaga.objects.filter(client_key=f"addr:{here}", state__in=CheckoutSaga.HOLDING).count() == 3
    assert stock(product) == (100, 3)
    invariants_hold()


def test_parallel_starts_at_cap_minus_one_let_one_through(caps):
    caps(checkouts=2)
    product = make_product(on_hand=100)
    here = an_address()
    assert start(guest(here, (product, 1))).status_code == 201
    for _ in range(5):  # several rounds: each round two new carts race for the last place
        pair = [guest(here, (product, 1)) for _ in range(2)]
        results = race(2, lambda i: start(pair[i]))  # noqa: B023 - the pair of this round
        assert sorted(r.status_code for r in results) == [201, 429], [getattr(r, "content", r) for r in results]
        winner = next(c for c, r in zip(pair, results, strict=True) if r.status_code == 201)
        winner_id = start(winner).json()["checkoutId"]
        assert winner.post(f"/api/checkout/{winner_id}/cancel").status_code == 200
    invariants_hold()


# --- units of one product per client --------------------------------------------------------------------


def test_one_cart_over_the_unit_limit_is_refused_before_anything_is_held(caps):
    caps(units=5)
    product = make_product(on_hand=50)
    refused = start(guest(an_address(), (product, 6)))
    assert refused.status_code == 409, refused.content
    body = refused.json()
    assert (body["code"], body["productId"], body["limit"]) == ("quantity_limit_exceeded", product.id, 5)
    assert not CheckoutSaga.objects.exists() and stock(product) == (50, 0)


def test_two_carts_of_one_address_together_may_not_pass_the_unit_limit(caps):
    caps(units=5)
    product, other = make_product(on_hand=50), make_product(on_hand=50)
    here = an_address()
    first = guest(here, (product, 3))
    assert start(first).status_code == 201
    over = guest(here, (other, 1), (product, 3))
    refused = start(over)
    assert refused.status_code == 409 and refused.json()["productId"] == product.id, refused.content
    assert refused.json()["limit"] == 5
    assert stock(product) == (50, 3) and stock(other) == (50, 0)  # all or nothing: the other line is not held
    assert start(guest(here, (product, 2))).status_code == 201  # up to the limit is fine
    assert start(guest(an_address(), (product, 5))).status_code == 201  # another client has its own limit
    invariants_hold()


def test_parallel_starts_of_one_client_count_their_units_together(caps):
    """No cap on the number of checkouts, a unit limit of 5: two carts of 3 start at once; one passes."""
    caps(units=5)
    product = make_product(on_hand=50)
    here = an_address()
    for _ in range(4):
        pair = [guest(here, (product, 3)) for _ in range(2)]
        results = race(2, lambda i: start(pair[i]))  # noqa: B023 - the pair of this round
        assert sorted(r.status_code for r in results) == [201, 409], [getattr(r, "content", r) for r in results]
        winner = next(c for c, r in zip(pair, results, strict=True) if r.status_code == 201)
        assert winner.post(f"/api/checkout/{start(winner).json()['checkoutId']}/cancel").status_code == 200
    assert Reservation.objects.filter(status="HELD").count() == 0
    invariants_hold()


def test_a_start_without_a_client_is_not_capped(caps):
    """Service callers (commands, tests) that name no client are not counted against anyone."""
    caps(checkouts=1, units=1)
    product = make_product()
    for _ in range(2):
        client = guest(an_address(), (product, 2))
        saga, created = checkout_start(cart_key=cart_ref_for_token(client._credentials["HTTP_X_CART_TOKEN"]).key)
        assert created and saga.client_key == "" and saga.hold_slot is None


def test_caps_off_write_no_slot(caps):
    caps()
    product = make_product(on_hand=50)
    here = an_address()
    for _ in range(3):
        assert start(guest(here, (product, 4))).status_code == 201
    assert set(CheckoutSaga.objects.values_list("client_key", "hold_slot")) == {(f"addr:{here}", None)}


# --- flash sale: units per buyer ------------------------------------------------------------------------


def test_one_cart_can_no_longer_take_every_flash_sale_token(caps, django_assert_num_queries):
    caps(flash=2)
    product = make_product(on_hand=10)
    flash_sale_start(product_id=product.id)
    greedy = guest(an_address(), (product, 10))
    with django_assert_num_queries(0):  # answered by the take script, before any token moves
        refused = start(greedy)
    assert refused.status_code == 409, refused.content
    body = refused.json()
    assert (body["code"], body["productId"], body["limit"]) == ("quantity_limit_exceeded", product.id, 2)
    state = flash_pool_state(product_id=product.id)
    assert (state.free, state.inflight) == (10, 0) and not CheckoutSaga.objects.exists()


def test_a_flash_sale_buyer_may_not_spread_units_over_several_carts(caps):
    caps(flash=2)
    product = make_product(on_hand=10)
    flash_sale_start(product_id=product.id)
    here = an_address()
    assert start(guest(here, (product, 2))).status_code == 201
    refused = start(guest(here, (product, 1)))
    assert refused.status_code == 409 and refused.json()["limit"] == 2, refused.content
    state = flash_pool_state(product_id=product.id)
    assert (state.free, state.inflight) == (8, 2)  # the refused start gave its token back
    assert start(guest(an_address(), (product, 2))).status_code == 201
    invariants_hold()


def test_the_lower_of_the_two_unit_limits_applies_in_a_flash_sale(caps):
    caps(units=1, flash=2)
    product = make_product(on_hand=10)
    flash_sale_start(product_id=product.id)
    refused = start(guest(an_address(), (product, 2)))
    assert refused.status_code == 409 and refused.json()["limit"] == 1, refused.content
