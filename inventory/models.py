"""Catalog and stock. Stock changes go through inventory/services.py only (version-checked updates)."""

from __future__ import annotations

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
