"""Celery tasks of inventory: thin wrappers over inventory.services."""

from __future__ import annotations

from celery import shared_task

from inventory import flashsale
from inventory.flashsale_queue import flash_queue_refresh_all
from inventory.services import reservations_release_expired


@shared_task(name="inventory.tasks.release_expired_reservations", ignore_result=True)
def release_expired_reservations() -> int:
    """Beat runs this every CARTFLOW_RELEASE_INTERVAL_SECONDS (schedule created by migration 0003).

    Safe on several workers at once; a run that overlaps the next one only finds less to do.
    """
    return len(reservations_release_expired())


@shared_task(name="inventory.tasks.flash_pool_sweep", ignore_result=True)
def flash_pool_sweep() -> int:
    """Beat runs this every 30 s (schedule created by migration 0004): repair flash-sale pools from the
    database (re-open pools lost with Redis, settle crashed holders). Returns the products repaired."""
    repaired = len(flashsale.flash_pool_sweep().repaired)
    flash_queue_refresh_all()  # lapsed queue tickets must not hold up buyers when nobody polls
    return repaired
