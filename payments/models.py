"""Payment state as CartFlow last saw it in Stripe, every call we made, and every webhook event received.

Rows change only through payments/services.py and payments/webhooks/. Stripe stays the source of truth:
handlers and reconciliation re-fetch the PaymentIntent and sync these rows from it.
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q

INTENT_STATUSES = [
    ("", "no PaymentIntent yet"),
    ("requires_payment_method", "requires payment method"),
    ("requires_confirmation", "requires confirmation"),
    ("requires_action", "requires action"),
    ("processing", "processing"),
    ("requires_capture", "requires capture"),
    ("succeeded", "succeeded"),
    ("canceled", "canceled"),
]
# Stripe never moves a PaymentIntent out of these; a stale read must not move our row out of them either.
TERMINAL_INTENT_STATUSES = ("succeeded", "canceled")


class Payment(models.Model):
    """The one payment of one order (docs/checkout-saga.md, "Guarantees": an order has exactly one PaymentIntent)."""

    order_id = models.CharField(max_length=64, unique=True)
    checkout_id = models.CharField(max_length=64, blank=True, default="")
    intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    status = models.CharField(max_length=32, choices=INTENT_STATUSES, blank=True, default="")
    amount = models.PositiveBigIntegerField(default=0, help_text="Minor units.")
    currency = models.CharField(max_length=3, blank=True, default="")
    amount_refunded = models.PositiveBigIntegerField(default=0, help_text="Minor units.")
    disputed = models.BooleanField(default=False, help_text="A dispute was opened: staff must answer it in Stripe.")
    order_cancelled_at = models.DateTimeField(
        null=True, blank=True, help_text="Set when the order was cancelled; a charge on it gets refunded."
    )
    # Written only by payments/refunds.py. Defaults live in the database too: the attempt recorder inserts
    # Payment rows with its own SQL (payments/services.py), naming only the columns it knows.
    refund_seq = models.PositiveIntegerField(
        default=0, db_default=0, help_text="Refunds numbered so far: the next one is refund_seq + 1."
    )
    refund_reserved = models.PositiveBigIntegerField(
        default=0,
        db_default=0,
        help_text="Minor units taken by the numbered refunds that have not failed (asked, pending or succeeded).",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.CheckConstraint(
                condition=Q(currency="") | Q(currency__regex=r"^[a-z]{3}$"), name="payment_currency"
            ),
            # Never more refunded than paid, whatever races the conditional UPDATE in payments/refunds.py.
            models.CheckConstraint(condition=Q(refund_reserved__lte=F("amount")), name="payment_refunds_within_amount"),
        ]

    def __str__(self) -> str:
        return f"order {self.order_id}: {self.intent_id or '-'} {self.status or 'no intent'}"


class DisputedPayment(Payment):
    """Admin's "Disputes" list: the same rows, filtered to disputed ones."""

    class Meta:
        proxy = True
        verbose_name = "dispute"
        verbose_name_plural = "disputes"


class Refund(models.Model):
    """One refund CartFlow asked Stripe for, numbered per payment (payments/refunds.py).

    Its amount is taken from what is left to refund (``Payment.refund_reserved``) before Stripe is called,
    so two staff refunding at once cannot both take the same money; a refund that fails gives it back.
    ``requested``: taken, and Stripe has not answered yet (or its answer was lost: calling again with the
    same key, ``cf:<order>:refund:<seq>``, finds out)."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "requested (Stripe has not answered)"
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELED = "canceled"

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    seq = models.PositiveIntegerField(help_text="1, 2, … per payment; part of the Stripe idempotency key.")
    amount = models.PositiveBigIntegerField(help_text="Minor units.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    idempotency_key = models.CharField(max_length=255)
    stripe_refund_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    failure_reason = models.CharField(max_length=255, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["payment_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["payment", "seq"], name="refund_one_per_seq"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"refund #{self.seq} of {self.payment.order_id}: {self.amount} ({self.status})"


class PaymentAttempt(models.Model):
    """One call to Stripe on behalf of an order, recorded after the call returned (or failed)."""

    OUTCOMES = [
        ("ok", "ok"),
        ("declined", "declined"),
        ("transient", "transient error (outcome unknown)"),
        ("permanent", "permanent error"),
    ]
    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="attempts")
    operation = models.CharField(max_length=32)
    idempotency_key = models.CharField(max_length=255)
    outcome = models.CharField(max_length=16, choices=OUTCOMES)
    intent_status = models.CharField(max_length=32, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.operation} {self.outcome}"


class WebhookEvent(models.Model):
    """A verified Stripe event, stored once by its id before it is processed."""

    RECEIVED = "received"
    PROCESSED = "processed"
    IGNORED = "ignored"
    PARKED = "parked"
    FAILED = "failed"
    STATUSES = [
        (RECEIVED, "received"),
        (PROCESSED, "processed"),
        (IGNORED, "ignored (type not handled)"),
        (PARKED, "parked (retries exhausted)"),
        (FAILED, "failed (bug)"),
    ]
    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    intent_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    payload = models.TextField(help_text="The raw body as Stripe signed it.")
    status = models.CharField(max_length=16, choices=STATUSES, default=RECEIVED, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type} ({self.status})"
