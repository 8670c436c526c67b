"""Orders, the checkout saga that produces them, its append-only step log, what staff did to an order
after it (refunds, cancellation), the outbox, and the outbound webhook rows (orders/outbound/: endpoints,
events, deliveries and their attempts).

State fields change only through version-checked UPDATEs in orders/saga/persistence.py (the saga's, and
the refund and cancellation ones after it); admin and views read. Outbound events are written with the
saga's statements too; deliveries only by orders/outbound/delivery.py.
"""

from __future__ import annotations

import base64
import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q


def public_id(prefix: str) -> str:
    """``<prefix>_<26 base32 chars>``: 128 random bits, opaque, URL-safe."""
    return f"{prefix}_{base64.b32encode(secrets.token_bytes(16)).decode().rstrip('=').lower()}"


def new_order_id() -> str:
    return public_id("ord")


def new_checkout_id() -> str:
    return public_id("chk")


class Order(models.Model):
    class Status(models.TextChoices):
        AWAITING_PAYMENT = "awaiting_payment"
        PAID = "paid"
        CONFIRMED = "confirmed"
        FULFILLED = "fulfilled"
        CANCELLED = "cancelled"

    class PaymentStatus(models.TextChoices):
        NONE = "none"
        REQUIRES_PAYMENT_METHOD = "requires_payment_method"
        REQUIRES_ACTION = "requires_action"
        PROCESSING = "processing"
        REQUIRES_CAPTURE = "requires_capture"  # authorized, captured at fulfilment (CARTFLOW_CAPTURE_METHOD=manual)
        SUCCEEDED = "succeeded"
        CANCELED = "canceled"
        REFUNDED = "refunded"

    public_id = models.CharField(max_length=40, unique=True, default=new_order_id, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    email = models.EmailField(blank=True, default="")
    cart_key = models.CharField(max_length=80, db_index=True)
    cart_token_hash = models.CharField(max_length=64, blank=True, default="", db_index=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.AWAITING_PAYMENT)
    payment_status = models.CharField(max_length=32, choices=PaymentStatus.choices, default=PaymentStatus.NONE)
    payment_intent_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    currency = models.CharField(max_length=3)
    subtotal = models.PositiveBigIntegerField(help_text="Minor units.")
    total = models.PositiveBigIntegerField(help_text="Minor units.")
    amount_refunded = models.PositiveBigIntegerField(default=0, help_text="Minor units.")
    flagged_for_review = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(currency__regex=r"^[a-z]{3}$"), name="order_currency_iso"),
        ]

    def __str__(self) -> str:
        return self.public_id


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey("inventory.Product", on_delete=models.PROTECT, related_name="+")
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    unit_price = models.PositiveBigIntegerField(help_text="Price snapshot at checkout start, minor units.")
    quantity = models.PositiveIntegerField()
    line_total = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["order_id", "product_id"]
        constraints = [
            models.UniqueConstraint(fields=["order", "product"], name="order_line_one_per_product"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="order_line_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.sku}"


TERMINAL_STATES = ("fulfilled", "failed", "expired", "cancelled")
ACTIVE_STATES = ("reserved", "awaiting_payment", "requires_action", "paid", "confirmed")
# Unfinished: holding stock while the buyer has not paid. What the hold caps count (orders/saga/hold_caps.py).
HOLDING_STATES = ("reserved", "awaiting_payment", "requires_action")
HOLD_SLOT_INDEX = "checkout_hold_slot_per_client"


class CheckoutSaga(models.Model):
    """One run of the checkout saga for one cart. ``state`` is the API's checkout status."""

    class State(models.TextChoices):
        RESERVED = "reserved"
        AWAITING_PAYMENT = "awaiting_payment"
        REQUIRES_ACTION = "requires_action"
        PAID = "paid"
        CONFIRMED = "confirmed"
        FULFILLED = "fulfilled"
        FAILED = "failed"
        EXPIRED = "expired"
        CANCELLED = "cancelled"

    class StepStatus(models.TextChoices):
        PENDING = "pending"
        ABOUT_TO = "about_to"
        DONE = "done"
        INDETERMINATE = "indeterminate"
        FAILED = "failed"

    TERMINAL = TERMINAL_STATES
    ACTIVE = ACTIVE_STATES
    HOLDING = HOLDING_STATES

    public_id = models.CharField(max_length=40, unique=True, default=new_checkout_id, editable=False)
    order = models.OneToOneField(Order, null=True, blank=True, on_delete=models.PROTECT, related_name="saga")
    cart_key = models.CharField(max_length=80)
    cart_version = models.PositiveBigIntegerField(default=0)
    cart_token_hash = models.CharField(max_length=64, blank=True, default="")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    email = models.EmailField(blank=True, default="")
    client_key = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="Who the hold caps count this checkout against: user:<id>, or addr:<address> for a guest.",
    )
    hold_slot = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="This checkout's place among its client's unfinished checkouts (hold caps)."
    )
    lines = models.JSONField(default=list, help_text="The cart's lines priced from the catalog at start.")
    currency = models.CharField(max_length=3, blank=True, default="")
    state = models.CharField(max_length=20, choices=State.choices, default=State.RESERVED)
    step = models.CharField(max_length=32, default="reserve")
    step_status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    compensate_to = models.CharField(
        max_length=20, blank=True, default="", help_text="Set while compensating: the terminal state it ends in."
    )
    attempt = models.PositiveIntegerField(default=0, help_text="Confirm attempts so far (keys the Stripe call).")
    charge_params = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the current attempt pays with ({'payment_method': …} or {'confirmation_token': …}): "
        "a lost create-and-confirm is replayed with the same key and the same parameters.",
    )
    payment_intent_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    client_secret = models.CharField(max_length=255, blank=True, default="")
    next_action = models.JSONField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="When the stock hold expires.")
    last_error_code = models.CharField(max_length=64, blank=True, default="")
    last_error_message = models.TextField(blank=True, default="")
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveBigIntegerField(default=0)
    requires_human = models.BooleanField(default=False)
    human_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "checkout saga"
        constraints = [
            # At most one active checkout per cart: a concurrent second start loses on this index.
            models.UniqueConstraint(
                fields=["cart_key"], condition=Q(state__in=ACTIVE_STATES), name="checkout_one_active_per_cart"
            ),
            # A client's unfinished checkouts each hold a different slot: two starts that picked the same
            # one race here, and the loser counts the client's holds again (orders/saga/hold_caps.py). Also
            # the index the hold caps count by.
            models.UniqueConstraint(
                fields=["client_key", "hold_slot"], condition=Q(state__in=HOLDING_STATES), name=HOLD_SLOT_INDEX
            ),
        ]
        indexes = [
            models.Index(
                fields=["lease_expires_at"], condition=~Q(state__in=TERMINAL_STATES), name="saga_active_lease"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL


class SagaStep(models.Model):
    """Append-only log of every step transition of a saga."""

    saga = models.ForeignKey(CheckoutSaga, on_delete=models.CASCADE, related_name="log")
    step = models.CharField(max_length=32)
    outcome = models.CharField(max_length=16)
    at = models.DateTimeField(auto_now_add=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.step} {self.outcome}"


class OrderOperation(models.Model):
    """What operations staff did to an order after its checkout: a refund or a cancellation, with who and
    why (orders/refunds.py, orders/cancellation.py). One cancellation per order: two staff cancelling at
    once share its row, and whichever gets there finishes it."""

    class Kind(models.TextChoices):
        REFUND = "refund"
        CANCEL = "cancel", "cancel after payment"

    class Status(models.TextChoices):
        STARTED = "started", "started (not finished yet)"
        DONE = "done"
        FAILED = "failed"

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="operations")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(
        max_length=150, help_text="Who asked: a staff user name, or the command and the OS user."
    )
    reason = models.TextField(blank=True, default="")
    amount = models.PositiveBigIntegerField(null=True, blank=True, help_text="Refund: minor units asked for.")
    refund_seq = models.PositiveIntegerField(null=True, blank=True, help_text="Refund: the payment's refund number.")
    restock = models.BooleanField(null=True, blank=True, help_text="Cancel: whether the stock is put back.")
    outcome = models.TextField(blank=True, default="", help_text="What it did, or why it stopped.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["order"], condition=Q(kind="cancel"), name="order_one_cancellation"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.order_id} by {self.actor_label} ({self.status})"


class Outbox(models.Model):
    """Events leaving the system, written in the transaction that caused them; consumed at least once."""

    event_type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "outbox"
        indexes = [models.Index(fields=["id"], condition=Q(processed_at__isnull=True), name="outbox_unprocessed")]

    def __str__(self) -> str:
        return f"{self.event_type} #{self.pk}"


# --- outbound webhooks (orders/outbound/) ------------------------------------------------------------

EVENT_TYPES = (
    "order.confirmed",
    "order.fulfilled",
    "order.cancelled",
    "order.refunded",
    "payment.failed",
    "checkout.expired",
)


def new_event_id() -> str:
    """``evt_<26 base32 chars>``: the id a receiver deduplicates by, the same on every attempt."""
    return public_id("evt")


def new_endpoint_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(24)}"


class WebhookEndpoint(models.Model):
    """A receiver managed in admin (``CARTFLOW_WEBHOOK_ENDPOINTS`` names more, which are not rows)."""

    url = models.URLField(max_length=2000, unique=True)
    secret = models.CharField(
        max_length=200,
        blank=True,
        default=new_endpoint_secret,
        help_text="Signs this endpoint's deliveries. Blank: CARTFLOW_WEBHOOK_SIGNING_SECRET.",
    )
    event_types = models.JSONField(
        default=list, blank=True, help_text="The event types it receives; empty: every type."
    )
    active = models.BooleanField(default=True, help_text="An inactive endpoint gets no new events and no retries.")
    description = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["url"]

    def __str__(self) -> str:
        return self.url


class OutboundEvent(models.Model):
    """Something that happened to an order, written with the change itself (orders/outbound/events.py)."""

    public_id = models.CharField(max_length=40, unique=True, default=new_event_id, editable=False)
    type = models.CharField(max_length=32, choices=[(t, t) for t in EVENT_TYPES])
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="outbound_events")
    key = models.CharField(
        max_length=80, help_text="An order has one event per key: a change written twice announces itself once."
    )
    order_snapshot = models.JSONField(help_text="The order's row as the change left it.")
    data = models.JSONField(default=dict, blank=True, help_text="More members of the body's data (a refund).")
    body = models.TextField(blank=True, default="", help_text="The JSON delivered, rendered once at fan-out.")
    created_at = models.DateTimeField()
    fanned_out_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["order", "key"], name="outbound_event_once_per_key")]
        indexes = [
            models.Index(fields=["created_at"], condition=Q(fanned_out_at__isnull=True), name="outbound_event_unsent")
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.public_id}"


class WebhookDelivery(models.Model):
    """One event to one endpoint URL, attempted until a 2xx or until ``give_up_at``."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        PARKED = "parked"

    event = models.ForeignKey(OutboundEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deliveries",
        help_text="Empty for a URL from CARTFLOW_WEBHOOK_ENDPOINTS.",
    )
    url = models.URLField(max_length=2000)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When it is due; an attempt in flight moves it past its timeout."
    )
    give_up_at = models.DateTimeField(help_text="A failure after this parks the delivery.")
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [models.UniqueConstraint(fields=["event", "url"], name="webhook_delivery_once_per_url")]
        indexes = [models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="webhook_delivery_due")]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.url}"


class WebhookDeliveryAttempt(models.Model):
    """One POST: what was sent (the signature's timestamp) and what came back (status, a short head)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    at = models.DateTimeField()
    signed_at = models.PositiveBigIntegerField(help_text="The signature's t (unix seconds).")
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    response_head = models.CharField(max_length=512, blank=True, default="")

    class Meta:
        ordering = ["delivery_id", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error}"
