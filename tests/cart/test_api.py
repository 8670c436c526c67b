"""The cart endpoints against the real Redis: identity, responses, ETags, and every refusal."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from cart.identity import token_hash
from tests.cart.conftest import add, adopt_token

pytestmark = pytest.mark.django_db


def test_first_write_issues_a_token_in_header_body_and_cookie(guest, product, redis_client):
    resp = add(guest, product.id, 2)
    assert resp.status_code == 201
    body = resp.json()
    token = body["token"]
    assert len(token) == 43
    assert resp["X-Cart-Token"] == token
    cookie = resp.cookies["cart_token"]
    assert cookie.value == token
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]
    assert body["items"] == [
        {
            "productId": product.id,
            "sku": product.sku,
            "name": "Thing",
            "quantity": 2,
            "unitPrice": 1250,
            "lineTotal": 2500,
        }
    ]
    assert (body["itemCount"], body["subtotal"], body["currency"], body["version"]) == (2, 2500, "usd", 1)
    assert resp["ETag"] == '"1"'
    assert body["expiresAt"]
    # Redis holds the cart under the token's hash, never the raw token.
    assert redis_client.exists("cart:{t:" + token_hash(token) + "}")
    assert not [k for k in redis_client.keys("*") if token.encode() in k]


def test_cookie_is_secure_behind_https(guest, product):
    resp = guest.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json", secure=True)
    assert resp.status_code == 201
    assert resp.cookies["cart_token"]["secure"]


def test_cookie_alone_names_the_cart(product):
    browser = APIClient()
    token = add(browser, product.id).json()["token"]
    resp = browser.get("/api/cart")  # only the cookie is sent
    assert resp.json()["token"] == token and resp.json()["itemCount"] == 1


def test_adds_accumulate_and_put_sets_and_zero_removes(guest, make_product):
    a, b = make_product(), make_product(price=300)
    adopt_token(guest, add(guest, a.id, 1))
    assert add(guest, a.id, 2).json()["items"][0]["quantity"] == 3
    add(guest, b.id, 1)
    resp = guest.put(f"/api/cart/items/{a.id}", {"quantity": 5}, format="json")
    assert resp.status_code == 200
    assert {i["productId"]: i["quantity"] for i in resp.json()["items"]} == {a.id: 5, b.id: 1}
    assert resp.json()["subtotal"] == 5 * 1250 + 300
    resp = guest.put(f"/api/cart/items/{a.id}", {"quantity": 0}, format="json")
    assert [i["productId"] for i in resp.json()["items"]] == [b.id]
    resp = guest.delete(f"/api/cart/items/{b.id}")
    assert resp.status_code == 200 and resp.json()["items"] == [] and resp.json()["currency"] is None
    assert resp.json()["version"] == 6


def test_delete_cart_empties_it_and_keeps_the_version_moving(guest, product):
    token = adopt_token(guest, add(guest, product.id, 3))
    resp = guest.delete("/api/cart")
    assert resp.status_code == 204 and resp["ETag"] == '"2"'
    body = guest.get("/api/cart").json()
    assert (body["items"], body["version"], body["token"]) == ([], 2, token)
    # A stale ETag from before the clear cannot match the rebuilt cart.
    assert add(guest, product.id, 1, **{"If-Match": '"1"'}).status_code == 412


@pytest.mark.parametrize("token", [None, "garbage", "x" * 43])
def test_unknown_or_malformed_token_reads_as_an_empty_cart(token):
    client = APIClient()
    headers = {"X-Cart-Token": token} if token else {}
    resp = client.get("/api/cart", headers=headers)
    assert resp.status_code == 200
    body = resp.json()
    assert (body["items"], body["itemCount"], body["subtotal"], body["version"]) == ([], 0, 0, 0)
    assert resp["ETag"] == '"0"'


@pytest.mark.parametrize("token", ["garbage", "x" * 43])
def test_unknown_or_malformed_token_on_write_starts_a_new_cart(product, token):
    resp = add(APIClient(), product.id, 1, **{"X-Cart-Token": token})
    assert resp.status_code == 201
    assert resp.json()["token"] != token and len(resp.json()["token"]) == 43
    assert resp.json()["version"] == 1


def _user(username: str = "ada"):
    return get_user_model().objects.create_user(username=username, password="correct horse battery")


def _sign_in(username: str = "ada", cart_token: str | None = None) -> tuple[APIClient, str]:
    client = APIClient()
    headers = {"X-Cart-Token": cart_token} if cart_token else {}
    resp = client.post(
        "/api/auth/token", {"username": username, "password": "correct horse battery"}, format="json", headers=headers
    )
    assert resp.status_code == 200, resp.content
    key = resp.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client, key


def test_two_devices_of_one_user_share_one_cart(make_product):
    a, b = make_product(), make_product()
    _user()
    phone, key1 = _sign_in()
    laptop, key2 = _sign_in()
    assert key1 == key2
    assert add(phone, a.id, 2).status_code == 201
    assert add(laptop, b.id, 1).json()["itemCount"] == 3
    body = phone.get("/api/cart").json()
    assert {i["productId"]: i["quantity"] for i in body["items"]} == {a.id: 2, b.id: 1}
    assert body["token"] is None


def test_wrong_password_is_refused():
    _user()
    resp = APIClient().post("/api/auth/token", {"username": "ada", "password": "nope"}, format="json")
    assert resp.status_code == 401 and resp.json()["code"] == "authentication_failed"


def test_signing_in_with_a_cart_token_merges_the_guest_cart(make_product, redis_client):
    a, b = make_product(), make_product()
    _user()
    device, _ = _sign_in()
    add(device, a.id, 1)
    guest = APIClient()
    token = adopt_token(guest, add(guest, a.id, 2))
    add(guest, b.id, 4)
    client, _ = _sign_in(cart_token=token)
    body = client.get("/api/cart").json()
    assert {i["productId"]: i["quantity"] for i in body["items"]} == {a.id: 3, b.id: 4}
    assert not redis_client.exists("cart:{t:" + token_hash(token) + "}")


def test_merge_endpoint_caps_lines_and_is_idempotent(make_product, settings):
    settings.CARTFLOW_MAX_LINE_QUANTITY = 10
    a = make_product()
    _user()
    client, _ = _sign_in()
    add(client, a.id, 7)
    guest = APIClient()
    token = adopt_token(guest, add(guest, a.id, 6))
    first = client.post("/api/cart/merge", {"token": token}, format="json")
    assert first.status_code == 200
    assert first.json()["items"][0]["quantity"] == 10
    second = client.post("/api/cart/merge", {"token": token}, format="json")
    assert second.json()["items"][0]["quantity"] == 10
    assert second.json()["version"] == first.json()["version"]
    assert guest.get("/api/cart").json()["items"] == []


def test_merge_needs_a_signed_in_user(product):
    resp = APIClient().post("/api/cart/merge", {"token": "a" * 43}, format="json")
    assert resp.status_code == 401 and resp.json()["code"] == "not_authenticated"


def test_merge_of_another_currency_is_refused_and_changes_nothing(make_product):
    usd, eur = make_product(), make_product(currency="eur")
    _user()
    client, _ = _sign_in()
    add(client, usd.id, 1)
    guest = APIClient()
    token = adopt_token(guest, add(guest, eur.id, 1))
    before = client.get("/api/cart").json()
    resp = client.post("/api/cart/merge", {"token": token}, format="json")
    assert resp.status_code == 409 and resp.json()["code"] == "currency_mismatch"
    assert client.get("/api/cart").json() | {"expiresAt": None} == before | {"expiresAt": None}
    assert guest.get("/api/cart").json()["itemCount"] == 1


# --- refusals: each answers its problem and leaves the cart exactly as it was -------------------


def _state(client: APIClient) -> dict:
    body = client.get("/api/cart").json()
    body.pop("expiresAt")
    return body


def _refusal_cases(a, inactive, eur, low):  # noqa: ANN001
    return [
        ("post", "/api/cart/items", {"productId": 999999, "quantity": 1}, {}, 404, "product_not_found"),
        ("post", "/api/cart/items", {"productId": inactive.id, "quantity": 1}, {}, 404, "product_not_found"),
        ("put", f"/api/cart/items/{inactive.id}", {"quantity": 1}, {}, 404, "product_not_found"),
        ("post", "/api/cart/items", {"productId": a.id, "quantity": 0}, {}, 400, "validation_error"),
        ("post", "/api/cart/items", {"productId": a.id, "quantity": -3}, {}, 400, "validation_error"),
        ("post", "/api/cart/items", {"productId": a.id, "quantity": 1.5}, {}, 400, "validation_error"),
        ("post", "/api/cart/items", {"productId": a.id, "quantity": "2"}, {}, 400, "validation_error"),
        ("post", "/api/cart/items", {"productId": a.id, "quantity": True}, {}, 400, "validation_error"),
        ("post", "/api/cart/items", {"productId": a.id}, {}, 400, "validation_error"),
        ("post", "/api/cart/items", {"productId": a.id, "quantity": 101}, {}, 400, "validation_error"),
        ("post", "/api/cart/items", {"productId": a.id, "quantity": 99}, {}, 400, "validation_error"),  # 2 + 99
        ("put", f"/api/cart/items/{a.id}", {"quantity": 101}, {}, 400, "validation_error"),
        ("put", f"/api/cart/items/{a.id}", {"quantity": -1}, {}, 400, "validation_error"),
        ("post", "/api/cart/items", {"productId": low.id, "quantity": 4}, {}, 409, "insufficient_stock"),
        ("put", f"/api/cart/items/{low.id}", {"quantity": 4}, {}, 409, "insufficient_stock"),
        ("post", "/api/cart/items", {"productId": eur.id, "quantity": 1}, {}, 409, "currency_mismatch"),
        (
            "post",
            "/api/cart/items",
            {"productId": a.id, "quantity": 1},
            {"If-Match": '"1"'},
            412,
            "cart_version_conflict",
        ),
        ("put", f"/api/cart/items/{a.id}", {"quantity": 1}, {"If-Match": '"9"'}, 412, "cart_version_conflict"),
        ("delete", f"/api/cart/items/{a.id}", None, {"If-Match": '"1"'}, 412, "cart_version_conflict"),
        ("delete", "/api/cart", None, {"If-Match": '"1"'}, 412, "cart_version_conflict"),
        ("delete", "/api/cart", None, {"If-Match": "banana"}, 400, "validation_error"),
    ]


def test_every_refusal_answers_its_problem_and_leaves_the_cart_unchanged(guest, make_product):
    a, low = make_product(on_hand=500), make_product(on_hand=3)
    inactive, eur = make_product(active=False), make_product(currency="eur")
    adopt_token(guest, add(guest, a.id, 2))
    add(guest, low.id, 1)
    before = _state(guest)
    assert before["version"] == 2
    for method, path, data, headers, status, code in _refusal_cases(a, inactive, eur, low):
        resp = getattr(guest, method)(path, data, format="json", headers=headers)
        assert (resp.status_code, resp.json()["code"]) == (status, code), (method, path, data, resp.json())
        assert resp["Content-Type"] == "application/problem+json"
        assert _state(guest) == before, (method, path, data)


def test_refusal_members(guest, make_product):
    a, low, eur = make_product(), make_product(on_hand=3), make_product(currency="eur")
    adopt_token(guest, add(guest, a.id, 1))
    body = add(guest, low.id, 4).json()
    assert (body["productId"], body["available"]) == (low.id, 3)
    body = add(guest, 424242, 1).json()
    assert body["productId"] == 424242
    body = add(guest, a.id, 1, **{"If-Match": '"7"'}).json()
    assert body["currentVersion"] == 1
    body = add(guest, eur.id, 1).json()
    assert (body["cartCurrency"], body["productCurrency"]) == ("usd", "eur")
    body = add(guest, a.id, 0).json()
    assert body["errors"][0]["field"] == "quantity"


def test_too_many_lines_is_refused(guest, make_product, settings):
    settings.CARTFLOW_MAX_CART_LINES = 2
    a, b, c = make_product(), make_product(), make_product()
    adopt_token(guest, add(guest, a.id))
    add(guest, b.id)
    before = _state(guest)
    resp = add(guest, c.id)
    assert resp.status_code == 400 and resp.json()["code"] == "validation_error"
    assert _state(guest) == before
    assert add(guest, a.id).status_code == 201  # an existing line still grows


def test_current_if_match_is_accepted(guest, product):
    adopt_token(guest, add(guest, product.id))
    resp = add(guest, product.id, 1, **{"If-Match": '"1"'})
    assert resp.status_code == 201 and resp["ETag"] == '"2"'
    resp = guest.put(f"/api/cart/items/{product.id}", {"quantity": 4}, format="json", headers={"If-Match": 'W/"2"'})
    assert resp.status_code == 200 and resp.json()["version"] == 3


def test_prices_come_from_the_catalog_and_follow_a_catalog_import(guest, product):
    from inventory.catalog import catalog_import, catalog_rows_parse

    adopt_token(guest, add(guest, product.id, 2))
    assert guest.get("/api/cart").json()["items"][0]["unitPrice"] == 1250  # now cached
    row = {"sku": product.sku, "name": "Renamed", "price": 999, "currency": "usd", "onHand": 50}
    catalog_import(rows=catalog_rows_parse(data=[row]))
    item = guest.get("/api/cart").json()["items"][0]
    assert (item["name"], item["unitPrice"], item["lineTotal"]) == ("Renamed", 999, 1998)
