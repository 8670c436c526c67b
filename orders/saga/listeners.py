"""What inventory and payments call: they know nothing of orders, so orders registers these in its
``AppConfig.ready`` (orders/apps.py) through ``inventory.hooks`` and ``payments.hooks``."""

from __future__ import annotations

from datetime import timedelta

import structlog
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from orders.errors import CheckoutInProgress
from orders.models import CheckoutSaga
from orders.saga import payment_steps
from orders.saga.driver import compensate, compensating, confirm, settle_charge
from orders.saga.intent_outcome import IntentOutcome, intent_outcome, status_outcome
from orders.saga.lease import driving
from orders.saga.persistence import ABOUT_TO, INDETERMINATE, order_records_intent, save
from orders.saga.steps import pending
from payments.hooks import NotKnownYet
from payments.interface import IntentResult

log = structlog.get_logger("cartflow.checkout")
S = CheckoutSaga.State


def saga_on_reservation_expired(holder: str) -> None:
    """inventory's expired listener: the hold of checkout ``holder`` expired → compensate to ``expired``."""
    saga_pk = CheckoutSaga.objects.filter(public_id=holder).values_list("pk", flat=True).first()
    if saga_pk is None:
        return
    try:
        with driving(saga_pk) as saga:
            if pending(saga, "charge"):
                settle_charge(saga)
            if saga.state in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION, S.RESERVED) or saga.compensate_to:
                compensate(
                    saga, to=saga.compensate_to or S.EXPIRED, code="reservation_expired", message="The hold expired."
                )
    except CheckoutInProgress:
        pass  # a live process is driving it; if it dies, recovery sees the expired hold


def saga_keeps_hold(holder: str) -> bool:
    """inventory's extend policy: keep an expired hold while its checkout is charging or in 3-D Secure.

    3-D Secure gets one more reservation TTL past the hold's first expiry, no more: a PaymentIntent in
    ``requires_action`` never expires at Stripe, so a buyer who walks away would otherwise hold the stock
    for ever (the sweep extending it every round)."""
    grace_cutoff = timezone.now() - timedelta(seconds=settings.CARTFLOW_RESERVATION_TTL_SECONDS)
    in_three_d_secure = Q(state=S.REQUIRES_ACTION, expires_at__gt=grace_cutoff)
    return (
        CheckoutSaga.objects.filter(public_id=holder)
        .filter(in_three_d_secure | Q(state=S.PAID) | Q(step="charge", step_status__in=[ABOUT_TO, INDETERMINATE]))
        .exclude(compensate_to__gt="")
        .exists()
    )


def saga_settled_for_intent(intent_id: str, status: str) -> bool:
    """payments' settled check: a paid (or authorized) intent whose checkout is confirmed (or fulfilled) needs
    nothing more from :func:`saga_on_intent` (which would take the lease, see the state and do nothing)."""
    return (
        status_outcome(status) in (IntentOutcome.PAID, IntentOutcome.AUTHORIZED)
        and CheckoutSaga.objects.filter(
            payment_intent_id=intent_id, state__in=[S.CONFIRMED, S.FULFILLED], compensate_to=""
        ).exists()
    )


def saga_on_intent(intent: IntentResult, source: str) -> None:
    """payments' intent listener (webhooks, reconciliation): converge the saga on the PaymentIntent as
    re-fetched from Stripe, whichever news arrives first. Raises NotKnownYet while the checkout does not
    know this intent yet (the webhook raced the HTTP response); payments retries."""
    checkout_id = intent.metadata.get("checkout_id")
    saga_pk = (
        CheckoutSaga.objects.filter(Q(public_id=checkout_id) | Q(payment_intent_id=intent.intent_id))
        .values_list("pk", flat=True)
        .first()
    )
    if saga_pk is None:
        if CheckoutSaga.objects.filter(order__public_id=intent.order_id or "-").exists():
            return
        raise NotKnownYet(f"no checkout for {intent.intent_id} yet")
    try:
        _converge(saga_pk, intent, source)
    except CheckoutInProgress as exc:
        # Another process holds the lease (a request mid-confirm, or one that died and whose lease has not
        # lapsed yet): the news is not lost, payments retries it once that process is done or recovered.
        raise NotKnownYet(f"checkout {checkout_id or intent.intent_id} is being driven elsewhere") from exc


def _converge(saga_pk: int, intent: IntentResult, source: str) -> None:
    outcome = intent_outcome(intent)
    with driving(saga_pk, wait=2.0) as saga:
        log.info("checkout_intent_update", checkout_id=saga.public_id, intent_status=intent.status, source=source)
        if not saga.payment_intent_id:
            if intent.metadata.get("checkout_id") != saga.public_id or saga.order_id is None:
                raise NotKnownYet(f"checkout {saga.public_id} has not stored its PaymentIntent yet")
            # The process that created it lost the answer (or died): Stripe's intent, re-fetched and
            # carrying this checkout's id, is the order's one PaymentIntent.
            save(saga, order=order_records_intent(intent), **payment_steps.intent_link(saga, intent))
        if saga.compensate_to:
            compensate(saga, to=saga.compensate_to)
        elif saga.is_terminal or saga.state == S.CONFIRMED:
            dead = saga.state not in (S.CONFIRMED, S.FULFILLED)
            if outcome is IntentOutcome.PAID and dead and intent.amount_refunded < intent.amount:
                payment_steps.refund(saga, intent)  # money landed on a dead checkout: give it back
            elif outcome is IntentOutcome.AUTHORIZED and dead:
                payment_steps.cancel_payment_intent(saga)  # an authorization on a dead checkout: void it
            # A confirmed checkout's authorization is its fulfilment's to capture.
        elif saga.state == S.PAID:
            confirm(saga)
        elif saga.state in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION):
            if outcome is IntentOutcome.NOT_CONFIRMED:
                return  # nothing happened yet (e.g. payment_intent.created)
            with compensating(saga):
                payment_steps.apply_intent(saga, intent, raise_decline=False)
            if saga.state == S.PAID:
                confirm(saga)
