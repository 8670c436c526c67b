"""Operations staff in Django admin: every page renders, stuck sagas are found and finished through the saga
code, orders are found by PaymentIntent id and link to their reservations and webhook events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from inventory.models import Reservation
from inventory.services import stock_adjust
from orders.models import CheckoutSaga, Order, OutboundEvent, WebhookEndpoint
from orders.outbound.delivery import outbound_event_fan_out, webhook_delivery_attempt
from orders.refunds import order_refund
from orders.saga.crashpoints import SimulatedCrash, crash_points
from payments.models import Payment, WebhookEvent
from tests.support.saga import guest_with_cart, invariants_hold, make_product, stock

pytestmark = pytest.mark.django_db(transaction=True)


def started(product, quantity: int = 1):  # noqa: ANN001, ANN201
    """A guest's checkout started through the real endpoint; returns (client, checkout id)."""
    client = guest_with_cart((product, quantity))
    response = client.post("/api/checkout/start", {}, format="json")
    assert response.status_code == 201, response.content
    return client, response.json()["checkoutId"]


def lapse_hold(checkout_id: str) -> None:
    """What the clock does to a hold past its window: the saga's and its reservations' expiry are behind us."""
    past = timezone.now() - timedelta(seconds=1)
    CheckoutSaga.objects.filter(public_id=checkout_id).update(expires_at=past)
    Reservation.objects.filter(holder=checkout_id).update(expires_at=past)


def saga(checkout_id: str) -> CheckoutSaga:
    return CheckoutSaga.objects.get(public_id=checkout_id)


def stuck_ids(staff, **extra) -> set[str]:  # noqa: ANN001, ANN003
    response = staff.get(reverse("admin:orders_checkoutsaga_changelist"), {"stuck": "yes", **extra})
    assert response.status_code == 200
    return {s.public_id for s in response.context["cl"].result_list}


def test_every_admin_changelist_and_change_page_answers_200(staff, stripe_emulator, webhook_receiver):
    """Catches a broken list_display, readonly field or inline anywhere in admin, with real rows."""
    product = make_product(on_hand=5)
    buyer, checkout_id = started(product)
    paid = buyer.post("/api/checkout/confirm", {"paymentMethodId": "pm_card_visa"}, format="json")
    assert paid.status_code == 200, paid.content
    order = saga(checkout_id).order
    Payment.objects.filter(order_id=order.public_id).update(disputed=True)  # a row for the disputes view
    WebhookEvent.objects.create(
        event_id="evt_admin_1", type="payment_intent.succeeded", intent_id=order.payment_intent_id, payload="{}"
    )
    stock_adjust(product_id=product.id, delta=3, reason="restock", user=staff.user)
    WebhookEndpoint.objects.create(url=webhook_receiver.url)  # a delivery with an attempt, for their pages
    [event] = OutboundEvent.objects.filter(order=order)
    outbound_event_fan_out(event_id=event.pk)
    webhook_delivery_attempt(delivery_id=event.deliveries.get().pk)
    order_refund(order_id=order.public_id, amount=100, reason="a row for refunds and operations", actor=staff.user)
    Group.objects.create(name="operations")
    Token.objects.create(user=staff.user)

    without_rows = []
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        changelist = staff.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert changelist.status_code == 200, f"{opts.label} changelist: {changelist.status_code}"
        obj = model_admin.get_queryset(changelist.wsgi_request).first()
        if obj is None:
            without_rows.append(opts.label)
            continue
        change = staff.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
        assert change.status_code == 200, f"{opts.label} change page: {change.status_code}"
    # Every operations model was checked with a real row; only third-party models may lack one.
    assert not [label for label in without_rows if label.split(".")[0] in {"orders", "inventory", "payments"}]


def test_stuck_filter_finds_lapsed_and_human_sagas_not_healthy_ones(staff, stripe_emulator, settings):
    product = make_product(on_hand=10)
    _, lapsed = started(product)
    _, healthy = started(product)
    _, human = started(product)
    CheckoutSaga.objects.filter(public_id=human).update(requires_human=True, human_reason="dispute needs a decision")
    lapse_hold(lapsed)  # its hold lapses and nothing has compensated it yet

    assert stuck_ids(staff) == {lapsed, human}
    assert stuck_ids(staff, stuck="human") == {human}
    assert healthy not in stuck_ids(staff)


def test_resume_action_finishes_a_stuck_saga_through_the_saga_code(staff, stripe_emulator, settings):
    product = make_product(on_hand=4)
    _, lapsed = started(product, 2)
    lapse_hold(lapsed)
    assert stuck_ids(staff) == {lapsed}

    response = staff.post(
        reverse("admin:orders_checkoutsaga_changelist"), {"action": "resume", "_selected_action": [saga(lapsed).pk]}
    )
    assert response.status_code == 302
    done = saga(lapsed)
    assert done.state == "expired" and done.order.status == "cancelled"
    assert stock(product) == (4, 0)  # the hold went back through inventory's release
    assert not Reservation.objects.filter(holder=lapsed, status="HELD").exists()
    assert done.log.filter(step="release").exists()  # the saga's own compensation ran and logged
    assert stuck_ids(staff) == set()
    invariants_hold()


def test_compensate_action_undoes_a_crashed_saga(staff, stripe_emulator, settings):
    product = make_product(on_hand=3)
    client, checkout_id = started(product)
    # A Stripe.js storefront asks for the intent; the process dies right after Stripe answered.
    crash_points.add("create_payment_intent:after")
    with pytest.raises(SimulatedCrash):
        client.post(f"/api/checkout/{checkout_id}/payment-intent")
    crashed = CheckoutSaga.objects.get()
    assert crashed.payment_intent_id == ""  # the answer died with the process
    assert stuck_ids(staff) == set()  # its lease is still live: maybe it is just slow
    CheckoutSaga.objects.filter(pk=crashed.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert stuck_ids(staff) == {crashed.public_id}

    response = staff.post(
        reverse("admin:orders_checkoutsaga_changelist"), {"action": "compensate", "_selected_action": [crashed.pk]}
    )
    assert response.status_code == 302
    crashed.refresh_from_db()
    assert crashed.state == "cancelled" and crashed.last_error_code == "operator"  # the operator gave up on it
    assert stock(product) == (3, 0)
    intent = stripe_emulator.client().v1.payment_intents.retrieve(crashed.payment_intent_id)
    assert intent.status == "canceled"
    invariants_hold()


def test_actions_refuse_a_terminal_saga_and_say_so(staff, stripe_emulator):
    product = make_product(on_hand=2)
    buyer, checkout_id = started(product)
    assert buyer.post(f"/api/checkout/{checkout_id}/cancel").status_code == 200
    response = staff.post(
        reverse("admin:orders_checkoutsaga_changelist"),
        {"action": "compensate", "_selected_action": [saga(checkout_id).pk]},
        follow=True,
    )
    assert "cancelled" in " ".join(str(m) for m in response.context["messages"])
    assert saga(checkout_id).state == "cancelled"


def test_order_search_by_payment_intent_and_links_to_reservations_and_webhooks(staff, stripe_emulator):
    product = make_product(on_hand=5)
    mine_client, mine = started(product)
    other_client, other = started(product)
    for client, checkout_id in ((mine_client, mine), (other_client, other)):
        assert client.post(f"/api/checkout/{checkout_id}/payment-intent").status_code == 200
    order = saga(mine).order
    other_order = saga(other).order
    WebhookEvent.objects.create(
        event_id="evt_mine", type="payment_intent.created", intent_id=order.payment_intent_id, payload="{}"
    )
    WebhookEvent.objects.create(
        event_id="evt_other", type="payment_intent.created", intent_id=other_order.payment_intent_id, payload="{}"
    )

    found = staff.get(reverse("admin:orders_order_changelist"), {"q": order.payment_intent_id})
    assert [o.public_id for o in found.context["cl"].result_list] == [order.public_id]
    by_email = staff.get(reverse("admin:orders_order_changelist"), {"q": order.email or "nobody@example.com"})
    assert by_email.status_code == 200

    page = staff.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert mine in page and "evt_mine" in page and "evt_other" not in page  # its own events, on the page
    reservations_url = reverse("admin:inventory_reservation_changelist") + f"?holder={mine}"
    webhooks_url = reverse("admin:payments_webhookevent_changelist") + f"?intent_id={order.payment_intent_id}"
    assert reservations_url in page and webhooks_url in page
    assert "reserve" in page and "create_payment_intent" in page  # the saga log

    reservations = staff.get(reservations_url)
    assert {r.holder for r in reservations.context["cl"].result_list} == {mine}
    events = staff.get(webhooks_url)
    assert [e.event_id for e in events.context["cl"].result_list] == ["evt_mine"]


def test_saga_search_by_client_finds_what_one_client_holds(staff):
    product = make_product(on_hand=5)
    mine = {started(product)[1] for _ in range(2)}  # the test client's address: 127.0.0.1

    def found(q: str) -> set[str]:
        page = staff.get(reverse("admin:orders_checkoutsaga_changelist"), {"q": q})
        return {s.public_id for s in page.context["cl"].result_list}

    assert found("addr:127.0.0.1") == mine
    assert found("addr:10.0.0.1") == set()


def test_order_and_saga_pages_are_read_only(staff, stripe_emulator):
    product = make_product(on_hand=2)
    _, checkout_id = started(product)
    order = saga(checkout_id).order
    page = staff.get(reverse("admin:orders_order_change", args=[order.pk]))
    assert b'name="_save"' not in page.content
    response = staff.post(reverse("admin:orders_order_change", args=[order.pk]), {"status": "confirmed"})
    assert response.status_code == 403
    assert Order.objects.get(pk=order.pk).status == "awaiting_payment"
    assert staff.post(reverse("admin:orders_checkoutsaga_delete", args=[saga(checkout_id).pk])).status_code == 403


def test_the_back_office_is_branded_cartflow(staff, client):
    """Staff see whose back office this is, on the login page and the index, not "Django administration"."""
    index = staff.get(reverse("admin:index")).content.decode()
    assert "CartFlow operations" in index and "Django administration" not in index
    assert "Orders, stock and payments" in index
    staff.logout()
    login = client.get(reverse("admin:login")).content.decode()
    assert "CartFlow operations" in login and "Django administration" not in login


def test_the_saga_page_shows_its_lines_with_money_in_their_currency(staff, stripe_emulator):
    """The saga keeps the lines priced at start as JSON; staff read them as money, not minor units."""
    yen = make_product(price=1800, currency="jpy", on_hand=5)
    _, checkout_id = started(yen, quantity=3)
    page = staff.get(reverse("admin:orders_checkoutsaga_change", args=[saga(checkout_id).pk])).content.decode()
    assert "Lines (as priced at start)" in page
    assert "<td>1,800 JPY</td><td>3</td><td>5,400 JPY</td>" in page
