"""Celery tasks of payments: thin, they take ids and call one service (docs/architecture.md, "Layout")."""

from __future__ import annotations

import random
from datetime import timedelta

import structlog
from celery import shared_task
from django.conf import settings
from django.utils import timezone

from payments.models import WebhookEvent
from payments.reconciliation import payments_reconcile
from payments.webhooks.handlers import RETRYABLE, webhook_event_park, webhook_event_process

log = structlog.get_logger("cartflow.payments.tasks")


def _backoff(retries: int) -> float:
    base = settings.CARTFLOW_WEBHOOK_RETRY_BASE_SECONDS
    return min(600.0, base * 2**retries) * random.uniform(0.8, 1.2)


@shared_task(bind=True, acks_late=True, max_retries=None, ignore_result=True)
def process_webhook_event(self, event_id: str) -> str:  # noqa: ANN001 - Celery's bound task
    """Apply a stored Stripe event; retry transient failures and NotKnownYet, then park it for staff."""
    try:
        return webhook_event_process(event_id=event_id).status
    except WebhookEvent.DoesNotExist:
        log.warning("webhook_event_missing", event_id=event_id)
        return "missing"
    except RETRYABLE as exc:
        if self.request.retries >= settings.CARTFLOW_WEBHOOK_MAX_RETRIES:
            webhook_event_park(event_id=event_id, error=f"{exc.__class__.__name__}: {exc}")
            return "parked"
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(acks_late=True, ignore_result=True)
def reconcile_payments_task(since_hours: float = 25.0) -> dict:
    """Hourly (django-celery-beat): compare recent payments with Stripe and repair drift."""
    report = payments_reconcile(since=timezone.now() - timedelta(hours=since_hours))
    summary = report.summary()
    if report.needs_human:
        log.error("reconcile_needs_human", **summary)
    else:
        log.info("reconcile_done", **summary)
    return summary
