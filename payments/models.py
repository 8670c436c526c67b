"""Payment state as CartFlow last saw it in Stripe, every call we made, and every webhook event received.

Rows change only through payments/services.py and payments/webhooks/. Stripe stays the source of truth:
handlers and reconciliation re-fetch the PaymentIntent and sync these rows from it.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

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
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.CheckConstraint(
                condition=Q(currency="") | Q(currency__regex=r"^[a-z]{3}$"), name="payment_currency"
            ),
        ]

    def __str__(self) -> str:
        return f"order {self.order_id}: {self.intent_id or '-'} {self.status or 'no intent'}"


class DisputedPayment(Payment):
    """Admin's "Disputes" list: the same rows, filtered to disputed ones."""

    class Meta:
        proxy = True
        verbose_name = "dispute"
        verbose_name_plural = "disputes"


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
