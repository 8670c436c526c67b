"""payment_attempt_record: one statement that upserts the order's Payment row and logs the attempt."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from payments.errors import PaymentTransientError
from payments.interface import IntentResult
from payments.models import Payment, PaymentAttempt
from payments.services import payment_attempt_record, payment_mark_order_cancelled

pytestmark = pytest.mark.django_db


def _intent(status: str, **kw) -> IntentResult:
    values = {"intent_id": "pi_rec", "amount": 700, "currency": "eur", "client_secret": None}
    return IntentResult(status=status, **{**values, **kw})


def test_first_record_creates_the_row_and_the_attempt_in_one_statement():
    with CaptureQueriesContext(connection) as ctx:
        attempt = payment_attempt_record(
            order_id="ord_r1", operation="create", idempotency_key="k1", intent=_intent("requires_payment_method"),
            checkout_id="chk_r1", amount=700, currency="eur",
        )  # fmt: skip
    assert len(ctx.captured_queries) == 1
    payment = Payment.objects.get(order_id="ord_r1")
    assert (payment.intent_id, payment.status, payment.checkout_id, payment.amount) == (
        "pi_rec", "requires_payment_method", "chk_r1", 700,
    )  # fmt: skip
    stored = PaymentAttempt.objects.get(pk=attempt.pk)
    assert (stored.payment_id, stored.operation, stored.outcome, stored.intent_status) == (
        payment.pk, "create", "ok", "requires_payment_method",
    )  # fmt: skip


def test_a_stale_record_never_regresses_a_terminal_status_nor_the_refunded_amount_nor_the_dispute():
    payment_attempt_record(
        order_id="ord_r2", operation="refund", idempotency_key="k", intent=_intent("succeeded", amount_refunded=300,
        disputed=True),
    )  # fmt: skip
    payment_attempt_record(
        order_id="ord_r2", operation="confirm", idempotency_key="k2", intent=_intent("requires_action")
    )
    payment = Payment.objects.get(order_id="ord_r2")
    assert (payment.status, payment.amount_refunded, payment.disputed) == ("succeeded", 300, True)
    assert PaymentAttempt.objects.filter(payment=payment).count() == 2


def test_an_error_is_logged_without_touching_an_existing_row():
    payment = payment_mark_order_cancelled(order_id="ord_r3")
    before = Payment.objects.get(pk=payment.pk)
    err = PaymentTransientError("Stripe unavailable: boom")
    err.stripe_code = "APIConnectionError"
    attempt = payment_attempt_record(order_id="ord_r3", operation="cancel", idempotency_key="k3", error=err)
    after = Payment.objects.get(pk=payment.pk)
    assert (after.status, after.intent_id, after.order_cancelled_at, after.updated) == (
        before.status, before.intent_id, before.order_cancelled_at, before.updated,
    )  # fmt: skip
    stored = PaymentAttempt.objects.get(pk=attempt.pk)
    assert (stored.payment_id, stored.outcome, stored.error_code) == (payment.pk, "transient", "APIConnectionError")
