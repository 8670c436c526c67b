"""Celery tasks of inventory: thin wrappers over inventory.services."""

from __future__ import annotations

from celery import shared_task

from inventory.services import reservations_release_expired


@shared_task(name="inventory.tasks.release_expired_reservations", ignore_result=True)
def release_expired_reservations() -> int:
    """Beat runs this every CARTFLOW_RELEASE_INTERVAL_SECONDS (schedule created by migration 0003).

    Safe on several workers at once; a run that overlaps the next one only finds less to do.
    """
    return len(reservations_release_expired())
