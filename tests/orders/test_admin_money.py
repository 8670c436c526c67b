"""The order page's refund and cancel-after-payment forms in Django admin (orders/admin.py): reached from the
order's actions, they call the same services as the commands, record the signed-in user, and show a refused
request as a form error with nothing changed."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from orders.models import Order, OrderOperation
from payments.models import Refund
from tests.support.saga import make_product, paid_order, stock

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_refund_action_opens_the_form_and_its_submit_refunds_and_records_who(staff, stripe_emulator):
    _, order_id = paid_order((make_product(price=2000), 1))
    order = Order.objects.get(public_id=order_id)
    changelist = reverse("admin:orders_order_changelist")
    chosen = staff.post(changelist, {"action": "refund", "_selected_action": [order.pk]})
    form_url = reverse("admin:orders_order_refund", args=[order.pk])
    assert (chosen.status_code, chosen["Location"]) == (302, form_url)
    page = staff.get(form_url)
    shown = page.content.decode()
    assert page.status_code == 200 and 'left to refund <strong data-test="left">20.00 USD</strong>' in shown
    assert "Left to refund: 20.00 USD (2000)" in shown  # the amount's help text: it is typed in minor units

    done = staff.post(form_url, {"amount": "750", "reason": "wrong size"}, follow=True)
    assert done.redirect_chain[-1][0] == reverse("admin:orders_order_change", args=[order.pk])
    assert f"Refunded 7.50 USD of order {order_id}" in done.content.decode()
    operation = OrderOperation.objects.get()
    assert (operation.actor_id, operation.actor_label, operation.reason) == (staff.user.pk, "ops", "wrong size")
    order.refresh_from_db()
    assert order.amount_refunded == 750
    page = staff.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert f"cf:{order_id}:refund:1" in page and "wrong size" in page and "partially_refunded" in page


def test_a_refused_refund_is_a_form_error_and_changes_nothing(staff, stripe_emulator):
    _, order_id = paid_order((make_product(price=2000), 1))
    order = Order.objects.get(public_id=order_id)
    page = staff.post(reverse("admin:orders_order_refund", args=[order.pk]), {"amount": "2001", "reason": "typo"})
    assert page.status_code == 200
    assert "A refund of 2001 (20.01 USD) is more than the 20.00 USD left" in page.content.decode()
    assert not Refund.objects.exists() and not OrderOperation.objects.exists()


def test_the_cancel_form_cancels_without_restock_when_unticked(staff, stripe_emulator):
    product = make_product(price=1000, on_hand=5)
    _, order_id = paid_order((product, 2))
    order = Order.objects.get(public_id=order_id)
    done = staff.post(
        reverse("admin:orders_order_cancel", args=[order.pk]), {"reason": "never arrived"}, follow=True
    )  # restock left unticked
    assert f"Order {order_id} cancelled" in done.content.decode()
    order.refresh_from_db()
    assert (order.status, order.amount_refunded) == ("cancelled", 2000)
    assert stock(product) == (3, 0)
    assert OrderOperation.objects.get(kind="cancel").restock is False


def test_the_forms_ask_for_one_order_and_for_the_right_to_change_orders(staff, django_user_model):
    ids = [Order.objects.create(cart_key=f"k{i}", currency="usd", subtotal=1000, total=1000).pk for i in range(2)]
    chosen = {"action": "cancel_after_payment", "_selected_action": ids}
    both = staff.post(reverse("admin:orders_order_changelist"), chosen, follow=True)
    assert "Select one order" in both.content.decode()

    viewer = django_user_model.objects.create_user(username="viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_order"))
    staff.force_login(viewer)  # the same test client, now signed in as someone who may only look
    assert staff.get(reverse("admin:orders_order_refund", args=[ids[0]])).status_code == 403
    assert staff.get(reverse("admin:orders_order_cancel", args=[ids[0]])).status_code == 403
