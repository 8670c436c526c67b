"""Shared tables: the stored Idempotency-Key requests (cartflow/idempotency.py)."""

from __future__ import annotations

from django.db import models


class IdempotencyRecord(models.Model):
    """One request made with an ``Idempotency-Key``, per scope (cart/user), kept 24 h.

    ``locked_until`` is set while the first request runs; a crashed request's lock lapses and a retry
    takes the record over (the operations behind it are themselves idempotent).
    """

    scope = models.CharField(max_length=100)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    locked_until = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="idempotency_one_per_scope_key")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}"
