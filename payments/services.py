"""Writes to payment state. Never called inside a Stripe call, and never calling Stripe themselves.

Rows converge on Stripe's state whatever order updates arrive in: a stale read never moves a row out of a
terminal status (``succeeded``, ``canceled``), ``amount_refunded`` only grows and ``disputed`` only gets set.
Reconciliation, which has just read Stripe, may force the row to Stripe's state.
"""

from __future__ import annotations

from django.db import connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from payments.errors import PaymentTransientError
from payments.interface import IntentResult
from payments.models import TERMINAL_INTENT_STATUSES, Payment, PaymentAttempt


def _apply_intent(*, payment_id: int, intent: IntentResult, force: bool = False) -> None:
    """Conditional UPDATEs, so concurrent syncs of the same row cannot regress it (no row locks)."""
    rows = Payment.objects.filter(pk=payment_id)
    refunded = Value(intent.amount_refunded) if force else Greatest(F("amount_refunded"), Value(intent.amount_refunded))
    rows.update(
        intent_id=intent.intent_id,
        amount=intent.amount,
        currency=intent.currency,
        amount_refunded=refunded,
        updated=timezone.now(),
    )
    if intent.disputed:
        rows.update(disputed=True)
    if not force:
        rows = rows.filter(~Q(status__in=TERMINAL_INTENT_STATUSES) | Q(status=intent.status))
    rows.update(status=intent.status)


def payment_sync_from_intent(*, intent: IntentResult, force: bool = False) -> Payment:
    """Bring the order's Payment row to the PaymentIntent's state (creating the row if only Stripe knew it).

    Raises ``LookupError`` for a PaymentIntent that is not CartFlow's (no ``metadata.order_id``, no row).
    """
    with transaction.atomic():
        payment = Payment.objects.filter(intent_id=intent.intent_id).first()
        if payment is None:
            if not intent.order_id:
                raise LookupError(f"PaymentIntent {intent.intent_id} belongs to no CartFlow order")
            payment, _ = Payment.objects.get_or_create(
                order_id=intent.order_id,
                defaults={
                    "checkout_id": intent.metadata.get("checkout_id", ""),
                    "amount": intent.amount,
                    "currency": intent.currency,
                },
            )
        _apply_intent(payment_id=payment.pk, intent=intent, force=force)
    payment.refresh_from_db()
    return payment


def payment_attempt_record(
    *,
    order_id: str,
    operation: str,
    idempotency_key: str,
    intent: IntentResult | None = None,
    error: Exception | None = None,
    checkout_id: str = "",
    amount: int = 0,
    currency: str = "",
) -> PaymentAttempt:
    """Record one call to Stripe (after it returned) and the PaymentIntent state it revealed.

    One SQL statement (so no transaction to open): upsert the order's Payment row by ``order_id`` with
    the PaymentIntent's state under the same rules as :func:`_apply_intent` (a terminal status is not
    left for another, ``amount_refunded`` only grows, ``disputed`` only gets set), and insert the
    attempt for the row it returns. It replaced a get_or_create + three UPDATEs + an INSERT (7 statements).
    """
    if error is not None:
        outcome = "transient" if isinstance(error, PaymentTransientError) else "permanent"
        error_code = getattr(error, "stripe_code", None) or error.__class__.__name__
        error_message = str(error)
    else:
        outcome = "declined" if intent is not None and intent.declined else "ok"
        error_code = (intent.decline_code or intent.error_code or "") if intent is not None and intent.declined else ""
        error_message = (intent.error_message or "") if intent is not None and intent.declined else ""
    now = timezone.now()
    if intent is None:  # nothing learnt about the PaymentIntent: create the row if missing, change nothing
        row = [order_id, checkout_id, None, "", amount, currency, 0, False, now, now]
        on_conflict = "order_id = p.order_id"  # a no-op update, so RETURNING yields the existing row
    else:
        row = [order_id, checkout_id, intent.intent_id, intent.status, intent.amount, intent.currency]
        row += [intent.amount_refunded, intent.disputed, now, now]
        on_conflict = _UPSERT_INTENT
    attempt = [operation, idempotency_key, outcome, intent.status if intent is not None else ""]
    attempt += [error_code or "", error_message[:2000], now]
    with connection.cursor() as cursor:
        cursor.execute(_RECORD_SQL.format(on_conflict=on_conflict), [*row, *attempt])
        attempt_id, payment_id = cursor.fetchone()
    return PaymentAttempt(
        id=attempt_id,
        payment_id=payment_id,
        operation=operation,
        idempotency_key=idempotency_key,
        outcome=outcome,
        intent_status=attempt[3],
        error_code=attempt[4],
        error_message=attempt[5],
        at=now,
    )


_TERMINAL_SQL = ", ".join(f"'{status}'" for status in TERMINAL_INTENT_STATUSES)
# The same rules as _apply_intent without ``force``; "p" is the existing row, EXCLUDED the new state.
_UPSERT_INTENT = f"""
    intent_id = EXCLUDED.intent_id, amount = EXCLUDED.amount, currency = EXCLUDED.currency,
    amount_refunded = GREATEST(p.amount_refunded, EXCLUDED.amount_refunded),
    disputed = p.disputed OR EXCLUDED.disputed, updated = EXCLUDED.updated,
    status = CASE WHEN p.status IN ({_TERMINAL_SQL}) THEN p.status ELSE EXCLUDED.status END
"""
_RECORD_SQL = f"""
WITH p_row AS (
    INSERT INTO {Payment._meta.db_table} AS p
        (order_id, checkout_id, intent_id, status, amount, currency, amount_refunded, disputed, created, updated)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (order_id) DO UPDATE SET {{on_conflict}}
    RETURNING id
)
INSERT INTO {PaymentAttempt._meta.db_table}
    (payment_id, operation, idempotency_key, outcome, intent_status, error_code, error_message, at)
SELECT p_row.id, %s, %s, %s, %s, %s, %s, %s FROM p_row
RETURNING id, payment_id
"""


def payment_mark_order_cancelled(*, order_id: str) -> Payment:
    """The orders app cancelled this order: any charge that still lands on it gets refunded by reconciliation."""
    with transaction.atomic():
        payment, _ = Payment.objects.get_or_create(order_id=order_id)
        Payment.objects.filter(pk=payment.pk, order_cancelled_at__isnull=True).update(
            order_cancelled_at=timezone.now(), updated=timezone.now()
        )
    payment.refresh_from_db()
    return payment
