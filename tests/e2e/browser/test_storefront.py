"""The reference storefront (storefront/) in a real browser: Playwright driving Debian's Chromium against a live
gunicorn, the Stripe emulator and the real Celery worker (conftest.py). ``make browser`` runs these, and only
these: they are marked ``browser``, which ``make test`` leaves out.

Each test writes a screenshot of every state it passes through to tests/e2e/browser/screenshots/ (git-ignored);
docs/storefront.png is one of them.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest

from inventory.flashsale import flash_sale_start
from inventory.models import Product, Stock
from orders.models import Order
from tests.e2e.browser.support import SCREENSHOTS

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (requirements.lock)")
expect = sync_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


class Shopper:
    """One shopper's tab, driven by the data-test attributes that docs/storefront.md lists."""

    def __init__(self, page, url: str, name: str) -> None:  # noqa: ANN001 - Playwright's Page
        self.page, self.url, self.name, self.shots = page, url, name, 0
        self.script_errors: list[str] = []
        page.on("pageerror", lambda exc: self.script_errors.append(str(exc)))

    def get(self, test_id: str):  # noqa: ANN201 - a Playwright Locator
        return self.page.locator(f'[data-test="{test_id}"]')

    def open(self, first: Product) -> None:
        """Load the page; it lists ``first``, or shows why it cannot (a problem, or the API out of reach)."""
        self.page.goto(self.url)
        shown = self.page.locator(f'[data-test="product-{first.id}"], #status.error').first
        expect(shown).to_be_visible()
        status = self.get("status")
        assert status.get_attribute("class") != "error", status.inner_text()

    def add(self, product: Product) -> None:
        self.get(f"add-{product.id}").click()
        expect(self.get(f"line-{product.id}")).to_be_visible()

    def pay(self, card: str) -> None:
        self.get("card").select_option(card)
        self.get("pay").click()

    def shot(self, state: str) -> Path:
        """A screenshot of what the shopper sees now (the whole page)."""
        self.shots += 1
        path = SCREENSHOTS / f"{self.name}-{self.shots:02d}-{state}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _product(name: str, price: int, *, on_hand: int = 10, currency: str = "usd") -> Product:
    product = Product.objects.create(sku=f"WEB-{uuid.uuid4().hex[:8]}", name=name, price=price, currency=currency)
    Stock.objects.create(product=product, on_hand=on_hand)
    return product


def _stock(product: Product) -> tuple[int, int]:
    row = Stock.objects.get(product=product)
    return row.on_hand, row.reserved


def _buy_two_products(shopper: Shopper, emulator) -> Order:  # noqa: ANN001 - the emulator's handle
    """Add two products, change a quantity, reload (the cart is kept), check out, a declined card, a good one."""
    shirt, mug = _product("T-shirt", 2500), _product("Mug", 1200)
    shopper.open(shirt)
    expect(shopper.get(f"available-{shirt.id}")).to_have_text("10 left")
    shopper.add(shirt)
    shopper.add(mug)
    shopper.get(f"inc-{shirt.id}").click()
    expect(shopper.get(f"qty-{shirt.id}")).to_have_text("2")
    shopper.page.reload()  # the cart token is in localStorage: the same cart comes back
    expect(shopper.get(f"qty-{shirt.id}")).to_have_text("2")
    expect(shopper.get(f"qty-{mug.id}")).to_have_text("1")
    expect(shopper.get("cart")).to_contain_text("$62.00")
    shopper.shot("cart")

    shopper.get("checkout").click()
    expect(shopper.get("countdown")).to_have_text(re.compile(r"^1[45]:\d\d$"))  # a 15-minute hold
    assert _stock(shirt) == (10, 2) and _stock(mug) == (10, 1)
    shopper.shot("checkout")

    shopper.pay("pm_card_chargeDeclined")
    expect(shopper.get("status")).to_have_text("Payment declined: Your card was declined.")
    expect(shopper.get("status")).to_have_class("error")
    shopper.shot("declined")

    shopper.pay("pm_card_visa")
    expect(shopper.get("order")).to_be_visible()
    expect(shopper.get("status")).to_contain_text("is confirmed")
    expect(shopper.page.locator("#order-status")).to_have_text(re.compile("^(confirmed|fulfilled)$"))
    expect(shopper.get("order")).to_contain_text("2 × T-shirt")
    shopper.shot("order")

    order = Order.objects.get(public_id=re.search(r"ord_\w+", shopper.get("order").inner_text()).group(0))
    assert order.total == 6200 and order.status in ("confirmed", "fulfilled")
    assert _stock(shirt) == (8, 0) and _stock(mug) == (9, 0)
    assert len(emulator.events("charge.failed")) == 1 and len(emulator.events("charge.succeeded")) == 1
    assert not shopper.script_errors, shopper.script_errors
    return order


def test_a_guest_buys_two_products_after_a_declined_card(shop, page, stripe_emulator):
    _buy_two_products(Shopper(page, f"{shop.url}/shop/", "purchase"), stripe_emulator)


def test_three_d_secure_approved_on_the_emulators_challenge_page(shop, page, stripe_emulator):
    hoodie = _product("Hoodie", 5500)
    shopper = Shopper(page, f"{shop.url}/shop/", "3ds")
    shopper.open(hoodie)
    shopper.add(hoodie)
    shopper.get("checkout").click()
    expect(shopper.get("countdown")).to_be_visible()
    shopper.pay("pm_card_threeDSecure2Required")

    page.wait_for_url(f"{stripe_emulator.url}/_emulator/3ds/**")  # next_action.redirect_to_url
    expect(page.locator("h1")).to_have_text("Authenticate this payment")
    expect(page.locator("body")).to_contain_text("55.00 USD")
    shopper.shot("challenge")
    page.locator('[data-test="approve"]').click()

    # Back on the storefront (the return_url), which follows the checkout until the webhook has settled it.
    page.wait_for_url(f"{shop.url}/shop/**")
    expect(shopper.get("order")).to_be_visible()
    expect(shopper.get("status")).to_contain_text("is confirmed")
    assert "payment_intent_client_secret" not in page.url  # the page drops it from the address bar
    shopper.shot("order")
    assert [e["type"] for e in stripe_emulator.events("payment_intent.succeeded")] == ["payment_intent.succeeded"]
    assert _stock(hoodie) == (9, 0)
    assert not shopper.script_errors, shopper.script_errors


def test_a_failed_three_d_secure_leaves_the_checkout_open_for_another_card(shop, page, stripe_emulator):
    cap = _product("Cap", 1800)
    shopper = Shopper(page, f"{shop.url}/shop/", "3ds-failed")
    shopper.open(cap)
    shopper.add(cap)
    shopper.get("checkout").click()
    shopper.pay("pm_card_threeDSecure2Required")
    page.wait_for_url(f"{stripe_emulator.url}/_emulator/3ds/**")
    page.locator('[data-test="fail"]').click()

    page.wait_for_url(f"{shop.url}/shop/**")
    expect(shopper.get("status")).to_have_text(
        "The payment did not go through (payment_intent_authentication_failure): try another card."
    )
    expect(shopper.get("countdown")).to_be_visible()  # the stock is still held
    shopper.shot("failed")
    shopper.pay("pm_card_visa")
    expect(shopper.get("status")).to_contain_text("is confirmed")
    assert _stock(cap) == (9, 0) and len(stripe_emulator.events("charge.succeeded")) == 1
    assert not shopper.script_errors, shopper.script_errors


def test_a_flash_sale_product_sells_out_while_the_shopper_watches(shop, page, stripe_emulator):
    sneaker = _product("Limited sneaker", 18000, on_hand=1)
    flash_sale_start(product_id=sneaker.id)
    shopper = Shopper(page, f"{shop.url}/shop/?poll=500", "flash")  # the catalog re-read twice a second
    shopper.open(sneaker)
    expect(shopper.get(f"product-{sneaker.id}")).to_contain_text("Flash sale")
    expect(shopper.get(f"available-{sneaker.id}")).to_have_text("1 left")
    shopper.add(sneaker)
    shopper.shot("watching")

    # Another buyer starts a checkout for the last unit: it is held, and the shopper sees it go.
    with httpx.Client(base_url=f"{shop.url}/api", timeout=30) as rival:
        added = rival.post("/cart/items", json={"productId": sneaker.id, "quantity": 1})
        rival.headers["X-Cart-Token"] = added.json()["token"]
        assert rival.post("/checkout/start", json={}).status_code == 201
        expect(shopper.get(f"available-{sneaker.id}")).to_have_text("Sold out")
        expect(shopper.get(f"add-{sneaker.id}")).to_be_disabled()

        # The shopper tries anyway: busy (Retry-After), and a place in the fair queue.
        shopper.get("checkout").click()
        expect(shopper.get("status")).to_contain_text("Flash sale busy: Every remaining unit is held")
        expect(shopper.get("status")).to_contain_text("Retry in 2 s. You are number 1 in the queue.")
        shopper.shot("busy")

        # The other buyer pays: the unit is gone for good, and the shopper's next try hears so.
        assert rival.post("/checkout/confirm", json={"paymentMethodId": "pm_card_visa"}).status_code == 200
    expect(shopper.get("status")).to_have_text(re.compile(r"^Sold out: "))
    expect(shopper.get(f"available-{sneaker.id}")).to_have_text("Sold out")
    expect(shopper.get("checkout")).to_be_enabled()  # no checkout was opened for the shopper
    shopper.shot("sold-out")
    assert _stock(sneaker) == (0, 0)
    assert not shopper.script_errors, shopper.script_errors


def test_the_same_purchase_from_a_storefront_on_another_origin(shop, second_origin, page, stripe_emulator):
    """The page served by another server (as a storefront deployed on its own would be), pointed at the API."""
    _buy_two_products(Shopper(page, f"{second_origin}/?api={shop.url}", "second-origin"), stripe_emulator)


def test_prices_are_shown_in_their_currencys_own_units(shop, page, stripe_emulator):
    """Amounts are minor units: 1800 yen are ¥1,800 (the yen has no minor unit), not ¥18."""
    shopper = Shopper(page, f"{shop.url}/shop/", "yen")
    tea = _product("Tea", 1800, currency="jpy")
    shopper.open(tea)
    expect(shopper.get(f"product-{tea.id}")).to_contain_text("¥1,800")
    shopper.add(tea)
    expect(shopper.get("cart")).to_contain_text("¥1,800")
    assert not shopper.script_errors, shopper.script_errors
