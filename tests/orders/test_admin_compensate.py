"""The admin's "compensate" action: an operator giving up on a checkout cancels it (``cancelled``, as a
buyer's cancel does), unless the saga was already compensating to another end, which it then finishes.
Through a real admin POST by a staff user, on checkouts made through the real endpoints."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from inventory.services import reservations_release_expired
from orders.models import CheckoutSaga
from tests.support.saga import guest_with_cart, invariants_hold, later, make_product, stock

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator(client, django_user_model):
    """A staff member (not a superuser) allowed to see and drive sagas."""
    user = django_user_model.objects.create_user(username="ops", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_checkoutsaga", "change_checkoutsaga"]))
    client.force_login(user)
    return client


def _checkout(product, pm: str):  # noqa: ANN001, ANN202
    buyer = guest_with_cart((product, 1))
    start = buyer.post("/api/checkout/start", {}, format="json").json()
    answer = buyer.post(
        "/api/checkout/confirm", {"checkoutId": start["checkoutId"], "paymentMethodId": pm}, format="json"
    )
    return CheckoutSaga.objects.get(public_id=start["checkoutId"]), answer


def _compensate(operator, saga: CheckoutSaga) -> str:  # noqa: ANN001
    response = operator.post(
        reverse("admin:orders_checkoutsaga_changelist"),
        {"action": "compensate", "_selected_action": [saga.pk]},
        follow=True,
    )
    assert response.status_code == 200
    return " ".join(str(m) for m in response.context["messages"])


def test_compensating_a_checkout_waiting_for_three_d_secure_cancels_it(operator, stripe_emulator):
    product = make_product(on_hand=3)
    saga, answer = _checkout(product, "pm_card_threeDSecure2Required")
    assert answer.status_code == 202 and answer.json()["status"] == "requires_action"
    assert stock(product) == (3, 1)

    messages = _compensate(operator, saga)

    saga.refresh_from_db()
    assert f"{saga.public_id}: now cancelled" in messages
    assert saga.state == "cancelled" and saga.last_error_code == "operator"
    assert saga.order.status == "cancelled" and stock(product) == (3, 0)
    intent = stripe_emulator.client().v1.payment_intents.retrieve(saga.payment_intent_id)
    assert intent.status == "canceled"
    assert saga.log.filter(step="end", outcome="cancelled").count() == 1
    invariants_hold()


def test_compensating_a_checkout_awaiting_payment_after_a_decline_cancels_it(operator, stripe_emulator):
    product = make_product(on_hand=3)
    saga, answer = _checkout(product, "pm_card_chargeDeclined")
    assert answer.status_code == 402

    assert f"{saga.public_id}: now cancelled" in _compensate(operator, saga)
    saga.refresh_from_db()
    assert saga.state == "cancelled" and stock(product) == (3, 0)
    invariants_hold()


def test_compensating_a_saga_already_compensating_finishes_it_to_its_own_end(operator, stripe_emulator):
    """The hold expired and the expiry's compensation was cut short (Stripe refused to cancel the intent):
    the operator's compensate finishes it as ``expired``, not as a cancellation."""
    product = make_product(on_hand=3)
    saga, _ = _checkout(product, "pm_card_chargeDeclined")  # an intent exists, so expiry must cancel it
    stripe_emulator.add_fault("POST /v1/payment_intents/*/cancel", "http_500", times=0)
    reservations_release_expired(now=later(minutes=20))
    saga.refresh_from_db()
    assert saga.compensate_to == "expired" and saga.state == "awaiting_payment"
    stripe_emulator.clear_faults()

    assert f"{saga.public_id}: now expired" in _compensate(operator, saga)
    saga.refresh_from_db()
    assert saga.state == "expired" and saga.compensate_to == "" and stock(product) == (3, 0)
    invariants_hold()
