"""A member of staff refunds part of an order in the admin, in a real browser: Playwright driving Debian's Chromium
against a live gunicorn, the Stripe emulator and the real Celery worker (conftest.py). Signed in through the
login form with a password, as a person would be; the order paid through the API as a storefront would pay it.

Screenshots of each state go to tests/e2e/browser/screenshots/admin-refund-*.png (git-ignored).
"""

from __future__ import annotations

import re
import secrets
import uuid

import httpx
import pytest

from inventory.models import Product, Stock
from orders.models import Order
from orders.selectors import order_payment_status
from payments.models import Refund, WebhookEvent
from tests.e2e.browser.support import SCREENSHOTS
from tests.support.gunicorn import wait_for

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (requirements.lock)")
expect = sync_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _paid_order(base_url: str) -> Order:
    """Two products in a guest's cart, a checkout started and confirmed with ``pm_card_visa`` over HTTP."""
    shirt = Product.objects.create(sku=f"ADM-{uuid.uuid4().hex[:8]}", name="T-shirt", price=2500, currency="usd")
    mug = Product.objects.create(sku=f"ADM-{uuid.uuid4().hex[:8]}", name="Mug", price=1200, currency="usd")
    for product in (shirt, mug):
        Stock.objects.create(product=product, on_hand=10)
    with httpx.Client(base_url=f"{base_url}/api", timeout=30) as buyer:
        added = buyer.post("/cart/items", json={"productId": shirt.id, "quantity": 2})
        assert added.status_code == 201, added.text
        buyer.headers["X-Cart-Token"] = added.json()["token"]
        assert buyer.post("/cart/items", json={"productId": mug.id, "quantity": 1}).status_code == 201
        started = buyer.post("/checkout/start", json={})
        assert started.status_code == 201, started.text
        paid = buyer.post("/checkout/confirm", json={"paymentMethodId": "pm_card_visa"})
        assert paid.status_code == 200, paid.text
    order = Order.objects.get(public_id=started.json()["orderId"])
    assert order.total == 6200 and order.status in ("confirmed", "fulfilled") and order.amount_refunded == 0
    return order


def test_staff_refund_part_of_an_order_through_the_admin_form(shop, page, stripe_emulator, django_user_model):
    password = secrets.token_urlsafe(16)
    django_user_model.objects.create_superuser(username="robin", password=password, email="robin@example.com")
    order = _paid_order(shop.url)
    order_page = f"{shop.url}/admin/orders/order/{order.pk}/change/"
    shots = iter(range(1, 100))

    def shot(state: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"admin-refund-{next(shots):02d}-{state}.png"), full_page=True)

    page.set_viewport_size({"width": 1400, "height": 900})  # a desk's screen: the order page has wide tables
    # Signed in through the login form, then straight to the order (?next=).
    page.goto(order_page)
    expect(page).to_have_url(re.compile(r"/admin/login/\?next="))
    page.fill("#id_username", "robin")
    page.fill("#id_password", password)
    shot("login")
    page.click('input[type="submit"]')
    expect(page).to_have_url(order_page)
    money = page.locator(".field-money")
    expect(money).to_contain_text("payment paid: 62.00 USD paid, 0.00 USD refunded, 62.00 USD left to refund")
    expect(page.locator(".field-lines")).to_contain_text("25.00 USD")
    expect(page.locator(".field-lines")).to_contain_text("50.00 USD")
    shot("order-paid")

    # The refund form: what is left, formatted, and an amount in minor units.
    money.get_by_role("link", name="refund…").click()
    expect(page.locator('[data-test="left"]')).to_have_text("62.00 USD")
    expect(page.locator('[data-test="money-form"]')).to_contain_text("Left to refund: 62.00 USD (6200)")
    page.fill("#id_amount", "1500")
    page.fill("#id_reason", "mug arrived chipped")
    shot("refund-form")
    page.get_by_role("button", name="Refund").click()

    # Back on the order: the message, the money line, the refund row, the payment, what staff did.
    expect(page).to_have_url(order_page)
    expect(page.locator(".messagelist")).to_contain_text(f"Refunded 15.00 USD of order {order.public_id}")
    expect(money).to_contain_text(
        "payment partially_refunded: 62.00 USD paid, 15.00 USD refunded, 47.00 USD left to refund"
    )
    refunds = page.locator(".field-refunds tbody tr")
    expect(refunds).to_have_count(1)
    expect(refunds.first).to_contain_text("#1")
    expect(refunds.first).to_contain_text("15.00 USD")
    expect(refunds.first).to_contain_text("succeeded")
    expect(page.locator(".field-payment")).to_contain_text("62.00 USD (refunded 15.00 USD)")
    expect(page.locator(".field-operations")).to_contain_text("robin")
    expect(page.locator(".field-operations")).to_contain_text("mug arrived chipped")
    shot("order-refunded")

    # The database and Stripe (the emulator) agree: one refund of 1500 cents.
    order.refresh_from_db()
    assert order.amount_refunded == 1500 and order_payment_status(order) == "partially_refunded"
    assert list(Refund.objects.values_list("seq", "amount", "status")) == [(1, 1500, "succeeded")]
    at_stripe = stripe_emulator.client().v1.refunds.list(params={"payment_intent": order.payment_intent_id})
    assert [(r.amount, r.status) for r in at_stripe.data] == [(1500, "succeeded")]

    # Stripe's charge.refunded reaches the webhook endpoint and the worker: the same page lists it.
    wait_for(
        lambda: (
            WebhookEvent.objects.filter(intent_id=order.payment_intent_id, type="charge.refunded")
            .exclude(status="received")
            .exists()
        ),
        timeout=30,
        what="charge.refunded processed by the worker",
    )
    page.reload()
    expect(page.locator(".field-webhook_events")).to_contain_text("charge.refunded")
    expect(page.locator(".field-reservations")).to_contain_text("COMMITTED")
    shot("order-with-webhooks")
