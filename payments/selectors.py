"""Reads of payment state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from payments.models import Payment, Refund, WebhookEvent


def payment_get(*, order_id: str) -> Payment | None:
    return Payment.objects.filter(order_id=order_id).first()


def payment_get_by_intent(*, intent_id: str) -> Payment | None:
    return Payment.objects.filter(intent_id=intent_id).first()


def refunds_of_order(*, order_id: str, limit: int | None = None) -> list[Refund]:
    """The order's numbered refunds (payments/refunds.py), in order; the first ``limit`` of them when given."""
    qs = Refund.objects.filter(payment__order_id=order_id).order_by("seq")
    return list(qs[:limit] if limit is not None else qs)


def payments_to_reconcile(*, since: datetime | None = None, ids: list[int] | None = None) -> QuerySet[Payment]:
    """Payments touched since ``since`` (all of them without it), oldest first, so a long run makes progress."""
    qs = Payment.objects.all()
    if since is not None:
        qs = qs.filter(updated__gte=since)
    if ids is not None:
        qs = qs.filter(pk__in=ids)
    return qs.order_by("updated", "id")


def webhook_event_get(*, event_id: str) -> WebhookEvent | None:
    return WebhookEvent.objects.filter(event_id=event_id).first()


def authorizations_made_before(*, before: datetime) -> QuerySet[Payment]:
    """Payments whose PaymentIntent holds an authorization (manual capture) made before ``before``, oldest
    first. The row is created by the first call that made the intent, so ``created`` is no later than the
    authorization: an age measured from it errs on the early side of Stripe's seven days."""
    return Payment.objects.filter(status="requires_capture", created__lt=before).order_by("created", "id")


_UNSETTLED = (WebhookEvent.PARKED, WebhookEvent.FAILED)


def webhook_intents_unsettled() -> QuerySet[WebhookEvent]:
    """The PaymentIntent ids that have a webhook event parked (retries exhausted) or failed (a bug), as a
    ``values_list`` a caller may filter by (``intent_id__in=``): the news about them waits for staff."""
    return WebhookEvent.objects.filter(status__in=_UNSETTLED).exclude(intent_id="").values_list("intent_id", flat=True)


def webhook_events_unsettled(*, intent_ids: list[str]) -> list[WebhookEvent]:
    """The parked or failed webhook events of these PaymentIntents, oldest first."""
    if not intent_ids:
        return []
    return list(
        WebhookEvent.objects.filter(status__in=_UNSETTLED, intent_id__in=intent_ids).order_by("received_at", "id")
    )


@dataclass(frozen=True)
class WebhookEventRow:
    """One stored Stripe event as staff see it on an order's page (plain data, without the payload)."""

    id: int
    event_id: str
    type: str
    status: str
    attempts: int
    received_at: datetime
    processed_at: datetime | None
    last_error: str


def webhook_events_of_intent(*, intent_id: str, limit: int = 50) -> tuple[list[WebhookEventRow], int]:
    """The first ``limit`` Stripe events about one PaymentIntent, oldest first (the order they arrived in),
    and how many there are in all. One query, and a count only when the rows fill ``limit``."""
    if not intent_id:
        return [], 0
    qs = WebhookEvent.objects.filter(intent_id=intent_id).order_by("received_at", "id")
    values = qs.values_list("id", "event_id", "type", "status", "attempts", "received_at", "processed_at", "last_error")
    rows = [WebhookEventRow(*row) for row in values[:limit]]
    return rows, (qs.count() if len(rows) == limit else len(rows))
