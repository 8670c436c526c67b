"""Helpers shared by the checkout/saga tests: a stocked product, a guest with a cart, a paid order, money and
stock sums."""

from __future__ import annotations

import itertools
from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from inventory.models import Product, Reservation, Stock
from orders.services import outbox_process_pending

_skus = itertools.count(1)


def make_product(*, price: int = 1250, on_hand: int = 10, currency: str = "usd") -> Product:
    product = Product.objects.create(sku=f"CHK-{next(_skus):05d}", name="Thing", price=price, currency=currency)
    Stock.objects.create(product=product, on_hand=on_hand)
    return product


def guest_with_cart(*items: tuple[Product, int]) -> APIClient:
    client = APIClient()
    for product, quantity in items:
        response = client.post("/api/cart/items", {"productId": product.id, "quantity": quantity}, format="json")
        assert response.status_code == 201, response.content
        if "HTTP_X_CART_TOKEN" not in client._credentials:
            client.credentials(HTTP_X_CART_TOKEN=response.json()["token"])
    return client


def paid_order(*items: tuple[Product, int], fulfil: bool = True) -> tuple[APIClient, str]:
    """A guest's order checked out and paid through the real endpoints (``pm_card_visa``), its fulfilment
    run from the outbox unless ``fulfil`` is False (then it stays ``confirmed``). Returns the buyer's client
    (which may read the order) and the order id."""
    client = guest_with_cart(*items)
    started = client.post("/api/checkout/start", {}, format="json")
    assert started.status_code == 201, started.content
    paid = client.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    assert paid.status_code == 200, paid.content
    if fulfil:
        outbox_process_pending()
    return client, started.json()["orderId"]


def stock(product: Product) -> tuple[int, int]:
    row = Stock.objects.get(product=product)
    return row.on_hand, row.reserved


def held(holder: str) -> int:
    return sum(Reservation.objects.filter(holder=holder, status="HELD").values_list("quantity", flat=True))


def charges(emulator) -> int:  # noqa: ANN001
    return len(emulator.events("charge.succeeded"))


def refunds(emulator) -> int:  # noqa: ANN001
    return len(emulator.events("charge.refunded"))


def invariants_hold() -> None:
    call_command("check_invariants")  # raises CommandError listing every violation


def later(minutes: int = 5):  # noqa: ANN201
    return timezone.now() + timedelta(minutes=minutes)


def stripe_request_counter(emulator):  # noqa: ANN001, ANN201
    """From now on, count every Stripe API request the emulator answers: a zero-latency fault rule that
    matches everything, whose ``fired`` counter is the count. Returns a function reading it."""
    rule = emulator.add_fault("*", "latency", times=0, ms=0)
    return lambda: next(f["fired"] for f in emulator.faults() if f["id"] == rule["id"])


def intents_of_order(emulator, order_id: str) -> list[str]:  # noqa: ANN001
    """The PaymentIntents the emulator holds for ``order_id`` (by ``metadata.order_id``)."""
    state = emulator.server.state
    with state.lock:
        return [pi["id"] for pi in state.payment_intents.values() if pi["metadata"].get("order_id") == order_id]
