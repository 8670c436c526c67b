"""The order's page in admin is one screen (orders/admin_order.py): the order and its money, payment and refunds,
reservations, Stripe's webhook events, outbound deliveries and the saga log, top to bottom, each table capped
with a link to its full list, in a number of queries that does not grow with the rows. Money is shown with its
currency in every admin list (cartflow/money.py), and those columns still sort by the amount."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory.models import Product
from orders.admin_display import TABLE_CAP
from orders.models import Order, OutboundEvent, WebhookEndpoint
from orders.outbound.delivery import outbound_event_fan_out, webhook_delivery_attempt
from orders.refunds import order_refund
from payments.models import Payment, WebhookEvent
from tests.support.saga import make_product, paid_order

pytestmark = pytest.mark.django_db(transaction=True)

SECTIONS = (
    "Order and money",
    "Payment and refunds",
    "Stock (reservations)",
    "Stripe webhook events",
    "Outbound webhook deliveries",
    "Checkout and saga log",
)


def order_page(staff, order: Order) -> str:  # noqa: ANN001
    response = staff.get(reverse("admin:orders_order_change", args=[order.pk]))
    assert response.status_code == 200
    return response.content.decode()


def section(page: str, title: str) -> str:
    """The HTML of one fieldset of the page, from its heading to the next one."""
    start = page.index(f">{title}</h2>")
    return page[start : page.index("</fieldset>", start)]


def test_the_order_page_shows_every_part_of_the_order_top_to_bottom(staff, stripe_emulator, webhook_receiver):
    product = make_product(price=1250, on_hand=5)
    WebhookEndpoint.objects.create(url=webhook_receiver.url)
    _, order_id = paid_order((product, 2))
    order = Order.objects.get(public_id=order_id)
    webhook_receiver.answer(500)  # the shop's endpoint fails once: the delivery waits for its retry
    event = OutboundEvent.objects.filter(order=order).order_by("id").first()
    outbound_event_fan_out(event_id=event.pk)
    webhook_delivery_attempt(delivery_id=event.deliveries.get().pk)
    WebhookEvent.objects.create(
        event_id="evt_page_1", type="payment_intent.succeeded", intent_id=order.payment_intent_id, payload="{}"
    )
    order_refund(order_id=order_id, amount=500, reason="one was scratched", actor=staff.user)

    page = order_page(staff, order)
    positions = [page.index(f">{title}</h2>") for title in SECTIONS]
    assert positions == sorted(positions)  # reads top to bottom in this order

    money = section(page, "Order and money")
    assert "payment <strong>partially_refunded</strong>: 25.00 USD paid, 5.00 USD refunded, 20.00 USD left" in money
    assert "12.50 USD" in money and product.sku in money  # the line, priced
    payment = section(page, "Payment and refunds")
    assert "25.00 USD (refunded 5.00 USD)" in payment
    assert "<td>#1</td><td>5.00 USD</td><td>succeeded</td>" in payment and "one was scratched" in payment
    stock = section(page, "Stock (reservations)")
    assert f"<td>{product.sku}</td><td>2</td><td>COMMITTED</td>" in stock
    assert reverse("admin:inventory_reservation_changelist") + f"?holder={order.saga.public_id}" in stock
    events = section(page, "Stripe webhook events")
    assert "evt_page_1" in events and "payment_intent.succeeded" in events
    assert reverse("admin:payments_webhookevent_changelist") + f"?intent_id={order.payment_intent_id}" in events
    deliveries = section(page, "Outbound webhook deliveries")
    delivery = event.deliveries.get()
    assert event.public_id in deliveries and webhook_receiver.url in deliveries
    assert f"<td>pending</td><td>1</td><td>500</td><td>{delivery.next_attempt_at:%Y-%m-%d %H:%M:%S}</td>" in deliveries
    saga_log = section(page, "Checkout and saga log")
    assert saga_log.index("<td>reserve</td>") < saga_log.index("<td>charge</td>") < saga_log.index("<td>confirm</td>")


def test_each_table_shows_at_most_fifty_rows_and_links_to_the_rest(staff, stripe_emulator):
    _, order_id = paid_order((make_product(), 1), fulfil=False)
    order = Order.objects.get(public_id=order_id)
    WebhookEvent.objects.bulk_create(
        WebhookEvent(
            event_id=f"evt_cap_{i:03d}", type="charge.updated", intent_id=order.payment_intent_id, payload="{}"
        )
        for i in range(TABLE_CAP + 2)
    )
    events = section(order_page(staff, order), "Stripe webhook events")
    assert len(re.findall(r">evt_cap_\d{3}</a>", events)) == TABLE_CAP
    assert "evt_cap_000" in events and f"evt_cap_{TABLE_CAP:03d}" not in events  # oldest first
    assert "… and 2 more" in events
    assert reverse("admin:payments_webhookevent_changelist") + f"?intent_id={order.payment_intent_id}" in events


def test_the_page_costs_the_same_queries_with_one_row_or_many(staff, stripe_emulator, webhook_receiver):
    """No query per row: more refunds, operations, webhook events and deliveries change what the page shows,
    not how often it asks the database."""
    WebhookEndpoint.objects.create(url=webhook_receiver.url)
    _, order_id = paid_order((make_product(price=5000), 1))
    order = Order.objects.get(public_id=order_id)
    url = reverse("admin:orders_order_change", args=[order.pk])

    def queries() -> int:
        for event_id in OutboundEvent.objects.filter(order=order, fanned_out_at=None).values_list("pk", flat=True):
            outbound_event_fan_out(event_id=event_id)  # order.refunded events reach the endpoint: deliveries
        with CaptureQueriesContext(connection) as ctx:
            assert staff.get(url).status_code == 200
        return len(ctx.captured_queries)

    def events(first: int, last: int) -> None:
        WebhookEvent.objects.bulk_create(
            WebhookEvent(event_id=f"evt_q_{i}", type="charge.updated", intent_id=order.payment_intent_id, payload="{}")
            for i in range(first, last)
        )

    order_refund(order_id=order_id, amount=100, reason="first", actor=staff.user)
    events(0, 1)
    queries()  # the first request also warms the process's caches (content types, permissions)
    few = queries()
    deliveries = order.outbound_events.filter(deliveries__isnull=False).count()
    for i in range(2, 6):
        order_refund(order_id=order_id, amount=100, reason=f"refund {i}", actor=staff.user)
    events(1, 20)
    assert queries() == few
    assert order.outbound_events.filter(deliveries__isnull=False).count() > deliveries  # there were more rows


def test_money_columns_show_the_currency_and_sort_by_the_amount(staff):
    small = Order.objects.create(cart_key="a", currency="usd", subtotal=999, total=999)
    big = Order.objects.create(cart_key="b", currency="jpy", subtotal=18000, total=18000)
    listed = staff.get(reverse("admin:orders_order_changelist"), {"o": "4"})  # the "total" column, ascending
    assert [o.pk for o in listed.context["cl"].result_list] == [small.pk, big.pk]
    page = listed.content.decode()
    assert "9.99 USD" in page and "18,000 JPY" in page and "18000 jpy" not in page
    descending = staff.get(reverse("admin:orders_order_changelist"), {"o": "-4"})
    assert [o.pk for o in descending.context["cl"].result_list] == [big.pk, small.pk]

    Payment.objects.create(order_id=small.public_id, amount=999, currency="usd", amount_refunded=250)
    Payment.objects.create(order_id=big.public_id, amount=18000, currency="jpy")
    payments = staff.get(reverse("admin:payments_payment_changelist"), {"o": "-4"})  # "amount", descending
    assert [p.order_id for p in payments.context["cl"].result_list] == [big.public_id, small.public_id]
    assert "2.50 USD" in payments.content.decode() and "18,000 JPY" in payments.content.decode()

    Product.objects.create(sku="KWD-1", name="Dates", price=1500, currency="kwd")
    assert "1.500 KWD" in staff.get(reverse("admin:inventory_product_changelist")).content.decode()
