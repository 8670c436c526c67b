"""Catalog and stock. Stock changes go through inventory/services.py only (version-checked updates)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    price = models.PositiveBigIntegerField(help_text="Unit price in minor units (cents).")
    currency = models.CharField(max_length=3, default="usd", help_text="ISO-4217, lower-case.")
    active = models.BooleanField(default=True)
    flash_sale = models.BooleanField(default=False, help_text="Checkouts first take a token from the Redis pool.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(currency__regex=r"^[a-z]{3}$"), name="product_currency_iso"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} — {self.name}"


class Stock(models.Model):
    """One row per product. ``available = on_hand - reserved``; ``version`` guards every update."""

    product = models.OneToOneField(Product, on_delete=models.CASCADE, related_name="stock")
    on_hand = models.PositiveIntegerField(default=0)
    reserved = models.PositiveIntegerField(default=0)
    version = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(reserved__gte=0), name="stock_reserved_nonnegative"),
            models.CheckConstraint(condition=Q(on_hand__gte=0), name="stock_on_hand_nonnegative"),
            models.CheckConstraint(condition=Q(reserved__lte=F("on_hand")), name="stock_reserved_le_on_hand"),
        ]

    def __str__(self) -> str:
        return f"{self.product.sku}: {self.on_hand} on hand, {self.reserved} reserved"

    @property
    def available(self) -> int:
        return max(0, self.on_hand - self.reserved)


class Reservation(models.Model):
    """Units of one product held for one checkout (``holder``): one row per holder and product.

    ``status`` moves HELD → COMMITTED (sold) or HELD → RELEASED / EXPIRED (given back); a RELEASED or
    EXPIRED row may become HELD again when the same holder reserves anew. Every move is a conditional,
    version-checked UPDATE in inventory/services.py, in the same transaction as its stock change.
    """

    class Status(models.TextChoices):
        HELD = "HELD", "Held"
        COMMITTED = "COMMITTED", "Committed"
        RELEASED = "RELEASED", "Released"
        EXPIRED = "EXPIRED", "Expired"

    holder = models.CharField(max_length=64, db_index=True, help_text="The checkout id holding the units.")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="reservations")
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.HELD)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    version = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["holder", "product_id"]
        constraints = [
            models.UniqueConstraint(fields=["holder", "product"], name="reservation_one_per_holder_product"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="reservation_quantity_positive"),
        ]
        indexes = [
            # The expiry sweep reads only HELD rows by expiry; a partial index keeps it small.
            models.Index(fields=["expires_at"], condition=Q(status="HELD"), name="reservation_held_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.holder}: {self.quantity} × product {self.product_id} ({self.status})"


class StockAdjustment(models.Model):
    """Audit trail of every staff change to ``on_hand`` (restock, write-off), written by ``stock_adjust``."""

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="stock_adjustments")
    delta = models.IntegerField()
    reason = models.CharField(max_length=200)
    who = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(auto_now_add=True)
    on_hand_after = models.PositiveIntegerField()
    reference = models.CharField(
        max_length=80,
        blank=True,
        default="",
        help_text="What the adjustment is for (e.g. order:<id>:cancel); applied once per product and reference.",
    )

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(delta=0), name="stock_adjustment_delta_nonzero"),
            models.UniqueConstraint(
                fields=["reference", "product"], condition=~Q(reference=""), name="stock_adjustment_once_per_reference"
            ),
        ]

    def __str__(self) -> str:
        return f"product {self.product_id}: {self.delta:+d} ({self.reason})"
