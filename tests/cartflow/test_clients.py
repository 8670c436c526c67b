"""Who a client is (docs/api.md, "Clients, proxies and browsers"): X-Forwarded-For is believed only from
CARTFLOW_TRUSTED_PROXIES; throttles count a cart token or user where there is one, else the address; sign-in
(API and admin) is counted per address and per username."""

from __future__ import annotations

import secrets

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from cartflow.clients import address_key, client_address, hold_cap_key
from tests.support.saga import make_product

pytestmark = pytest.mark.django_db
PASSWORD = "right-horse-battery"


@pytest.fixture(autouse=True)
def _fast_password_hashes(settings):
    """These tests make many sign-ins: a cheap hasher keeps them quick (the counting is what is tested)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def rates(settings, fresh_throttle_window):
    """Set some throttle rates for this test (the rest stay as configured)."""

    def set_rates(**scopes: str) -> None:
        rest = settings.REST_FRAMEWORK
        settings.REST_FRAMEWORK = {**rest, "DEFAULT_THROTTLE_RATES": {**rest["DEFAULT_THROTTLE_RATES"], **scopes}}

    return set_rates


@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create_user(username="ann", password=PASSWORD, is_staff=True)


def _sign_in(client: APIClient, password: str, username: str = "ann", **meta: str):
    return client.post("/api/auth/token", {"username": username, "password": password}, format="json", **meta)


# --- the address ---


@pytest.mark.parametrize(
    ("hops", "forwarded", "expected"),
    [
        (0, "203.0.113.9", "10.0.0.1"),  # no trusted proxy: the header is the client's own claim
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # what the client wrote itself is left of the proxy's entry
        (2, "6.6.6.6, 203.0.113.9, 10.0.0.7", "203.0.113.9"),
        (2, "203.0.113.9", "203.0.113.9"),  # fewer entries than proxies: the first proxy's view
        (1, "203.0.113.9:51234", "203.0.113.9"),  # a port is dropped
        (1, "[2001:db8::1]:443", "2001:db8::1"),
        (1, "not-an-address", "10.0.0.1"),  # garbage from a misconfigured proxy: the peer
        (1, "", "10.0.0.1"),
    ],
)
def test_client_address_believes_only_trusted_proxies(settings, hops, forwarded, expected):
    settings.CARTFLOW_TRUSTED_PROXIES = hops
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected


def test_an_ipv6_client_is_counted_by_its_64_network():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert address_key("203.0.113.9") == "203.0.113.9"


def test_the_hold_cap_key_is_the_user_else_the_trusted_address_never_the_cart_token(settings, ann):
    settings.CARTFLOW_TRUSTED_PROXIES = 1
    factory = RequestFactory()
    guest = factory.post("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    guest.user = AnonymousUser()
    other_token = factory.post("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    other_token.user, other_token.COOKIES["cart_token"] = AnonymousUser(), secrets.token_urlsafe(32)
    assert hold_cap_key(guest) == hold_cap_key(other_token) == "addr:203.0.113.9"
    ipv6 = factory.post("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="2001:db8:1:2:aaaa::1")
    ipv6.user = AnonymousUser()
    assert hold_cap_key(ipv6) == "addr:2001:db8:1:2::/64"
    signed_in = factory.post("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    signed_in.user = ann
    assert hold_cap_key(signed_in) == f"user:{ann.pk}"


# --- throttles keyed by that address ---


def test_a_forged_x_forwarded_for_does_not_dodge_the_sign_in_throttle(settings, rates, ann):
    settings.CARTFLOW_TRUSTED_PROXIES = 0
    rates(sign_in="3/min")
    client = APIClient()
    codes = [_sign_in(client, "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]


def test_behind_a_trusted_proxy_each_real_client_is_counted_apart(settings, rates, ann):
    settings.CARTFLOW_TRUSTED_PROXIES = 1
    rates(sign_in="3/min")
    proxy = APIClient(REMOTE_ADDR="10.0.0.1")

    def attempt(client_ip: str, forged: str = "") -> int:
        chain = f"{forged}, {client_ip}" if forged else client_ip
        return _sign_in(proxy, "wrong", HTTP_X_FORWARDED_FOR=chain).status_code

    # One client, whatever it writes into the header itself, uses up its own allowance only.
    assert [attempt("203.0.113.5", forged=f"6.6.6.{i}") for i in range(4)] == [401, 401, 401, 429]
    assert attempt("203.0.113.6") == 401


def test_seventy_five_guesses_from_as_many_addresses_do_not_find_the_password(settings, ann):
    """Per username (default CARTFLOW_SIGN_IN_USERNAME_RATE 10/hour): a botnet behind the proxy gets ten
    failures for the account, and then even the right password is refused until the window ends."""
    settings.CARTFLOW_TRUSTED_PROXIES = 1
    proxy = APIClient(REMOTE_ADDR="10.0.0.1")
    codes = [_sign_in(proxy, f"guess-{i}", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code for i in range(75)]
    assert codes.count(401) == 10 and codes.count(429) == 65
    refused = _sign_in(proxy, PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.200")
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited" and int(refused["Retry-After"]) >= 1
    assert "token" not in refused.json()


def test_the_username_count_spares_other_accounts_and_successful_sign_ins(settings, django_user_model, ann):
    settings.CARTFLOW_TRUSTED_PROXIES = 1
    django_user_model.objects.create_user(username="bob", password=PASSWORD)
    proxy = APIClient(REMOTE_ADDR="10.0.0.1")
    for i in range(10):
        assert _sign_in(proxy, "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code == 401
    assert _sign_in(proxy, PASSWORD, username="bob", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 200
    assert _sign_in(proxy, PASSWORD, username="ANN", HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 429
    # Successes give their attempt back: a user signing in on many devices never runs out.
    for i in range(15):
        assert _sign_in(proxy, PASSWORD, username="bob", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code == 200


def test_the_admin_login_is_counted_per_address(settings, rates, ann):
    rates(sign_in="3/min")
    browser = Client(REMOTE_ADDR="203.0.113.5")
    codes = [
        browser.post("/admin/login/", {"username": "ann", "password": "wrong"}, HTTP_X_FORWARDED_FOR=f"6.6.6.{i}")
        for i in range(4)
    ]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert int(codes[-1]["Retry-After"]) >= 1
    # The API shares the address's count: password guesses are counted wherever they are made.
    assert _sign_in(APIClient(REMOTE_ADDR="203.0.113.5"), PASSWORD).status_code == 429
    assert Client(REMOTE_ADDR="203.0.113.6").get("/admin/login/").status_code == 200


def test_the_admin_login_is_counted_per_username(settings, ann):
    settings.CARTFLOW_TRUSTED_PROXIES = 1
    for i in range(10):
        page = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").post(
            "/admin/login/", {"username": "ann", "password": "wrong"}
        )
        assert page.status_code == 200
    staff = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.9")
    assert staff.post("/admin/login/", {"username": "ann", "password": PASSWORD}).status_code == 429
    assert "_auth_user_id" not in staff.session


def test_a_successful_admin_login_still_signs_in(ann):
    staff = Client(REMOTE_ADDR="203.0.113.5")
    response = staff.post("/admin/login/?next=/admin/", {"username": "ann", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert staff.get("/admin/").status_code == 200


def test_guests_behind_one_address_each_get_their_own_checkout_allowance(rates):
    """Checkout is counted per cart: a shop-wide NAT or an undeclared proxy does not lump its shoppers."""
    rates(checkout="2/min")
    product = make_product(on_hand=50)
    shoppers = []
    for _ in range(4):
        shopper = APIClient(REMOTE_ADDR="10.0.0.1")
        token = shopper.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json").json()
        shopper.credentials(HTTP_X_CART_TOKEN=token["token"])
        shoppers.append(shopper)
    assert [s.post("/api/checkout/start", {}, format="json").status_code for s in shoppers] == [201] * 4
    # Each cart has its own count: the same cart is refused after its own two.
    assert shoppers[0].get(f"/api/checkout/{'chk_' + 'a' * 26}").status_code == 404  # reads are not counted
    assert shoppers[0].post("/api/checkout/start", {}, format="json").status_code == 200
    assert shoppers[0].post("/api/checkout/start", {}, format="json").status_code == 429


def test_new_carts_are_counted_per_address_so_invented_tokens_do_not_dodge(rates):
    rates(cart_create="3/min")
    product = make_product(on_hand=50)
    client = APIClient(REMOTE_ADDR="203.0.113.5")

    def add_with_fresh_token() -> int:
        headers = {"HTTP_X_CART_TOKEN": secrets.token_urlsafe(32)}  # well-formed, names no cart
        return client.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json", **headers)

    responses = [add_with_fresh_token() for _ in range(4)]
    assert [r.status_code for r in responses] == [201, 201, 201, 429]
    assert responses[-1].json()["code"] == "rate_limited"
    # A cart that exists is written to under its own token, however many carts the address started.
    client.credentials(HTTP_X_CART_TOKEN=responses[0].json()["token"])
    assert client.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json").status_code == 201
    other = APIClient(REMOTE_ADDR="203.0.113.6")
    assert other.post("/api/cart/items", {"productId": product.id, "quantity": 1}, format="json").status_code == 201


def test_flash_queue_joins_are_counted_per_address_signed_in_or_not(rates, django_user_model):
    rates(checkout="2/min")
    user = django_user_model.objects.create_user(username="cy", password=PASSWORD)
    signed_in = APIClient(REMOTE_ADDR="203.0.113.5")
    signed_in.force_authenticate(user)
    guest = APIClient(REMOTE_ADDR="203.0.113.5")
    codes = [c.post("/api/flash-sales/NO-SUCH-SKU/queue").status_code for c in (signed_in, guest, signed_in)]
    assert codes == [404, 404, 429]
    assert APIClient(REMOTE_ADDR="203.0.113.6").post("/api/flash-sales/NO-SUCH-SKU/queue").status_code == 404


@pytest.mark.django_db
def test_a_forged_x_forwarded_proto_does_not_skip_the_https_redirect(settings):
    """Without a proxy in front (CARTFLOW_TRUSTED_PROXIES=0, whose settings leave SECURE_PROXY_SSL_HEADER
    unset: tests/cartflow/test_servicefinder.py) a plain-HTTP client saying "https" is still redirected."""
    settings.SECURE_SSL_REDIRECT = True
    assert settings.SECURE_PROXY_SSL_HEADER is None
    forged = Client().get("/api/products", HTTP_X_FORWARDED_PROTO="https")
    assert (forged.status_code, forged["Location"]) == (301, "https://testserver/api/products")

    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # what CARTFLOW_TRUSTED_PROXIES=1 sets
    assert Client().get("/api/products", HTTP_X_FORWARDED_PROTO="https").status_code == 200
