"""Order services outside the saga proper: the outbox (writing an event, its consumer and its sweep).

orders/tasks.py imports this module, never the reverse: events are handed to a worker by task name.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from celery import signature
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from orders.models import Outbox
from orders.saga.driver import saga_fulfil

log = structlog.get_logger("cartflow.outbox")
HANDLED = ("order.confirmed",)


def outbox_add(*, event_type: str, payload: dict[str, Any]) -> Outbox:
    """An event for the shop's other systems (``order.refunded``, ``order.cancelled``), written in the
    caller's transaction, so it exists exactly when what it tells did; handed to a worker once that commits
    (the sweep re-sends it if the broker is away)."""
    row = Outbox.objects.create(event_type=event_type, payload=payload)
    transaction.on_commit(lambda: _enqueue(row.pk))
    return row


def _enqueue(outbox_id: int) -> None:
    try:
        signature("orders.tasks.outbox_process_task", args=(outbox_id,)).delay()
    except Exception:  # noqa: BLE001 - the broker is down: the beat sweep re-enqueues unprocessed rows
        log.warning("outbox_enqueue_failed", outbox_id=outbox_id)


def outbox_process(*, outbox_id: int) -> bool:
    """Consume one outbox event (idempotent: at-least-once delivery is fine). True when processed."""
    row = Outbox.objects.filter(pk=outbox_id).first()
    if row is None or row.processed_at is not None:
        return True
    Outbox.objects.filter(pk=outbox_id).update(attempts=F("attempts") + 1)
    try:
        if row.event_type == "order.confirmed":
            saga_fulfil(checkout_id=row.payload["checkoutId"], outbox_id=row.pk)
        else:
            Outbox.objects.filter(pk=outbox_id, processed_at__isnull=True).update(processed_at=timezone.now())
    except Exception as exc:
        Outbox.objects.filter(pk=outbox_id).update(last_error=f"{exc.__class__.__name__}: {exc}"[:2000])
        raise
    return Outbox.objects.filter(pk=outbox_id, processed_at__isnull=False).exists()


def outbox_sweep(*, older_than_seconds: int = 30, limit: int = 500) -> int:
    """Re-enqueue events still unprocessed after a while (a lost message, a broker outage)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        Outbox.objects.filter(processed_at__isnull=True, created_at__lt=cutoff).values_list("pk", flat=True)[:limit]
    )
    for pk in ids:
        signature("orders.tasks.outbox_process_task", args=(pk,)).delay()
    return len(ids)


def outbox_process_pending(*, limit: int = 500) -> int:
    """Process unprocessed events inline (operators, tests). Returns how many were processed."""
    done = 0
    for pk in list(Outbox.objects.filter(processed_at__isnull=True).values_list("pk", flat=True)[:limit]):
        done += bool(outbox_process(outbox_id=pk))
    return done
