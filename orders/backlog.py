"""What waits for the background jobs, read from PostgreSQL when /metrics is scraped (cartflow/metrics.py).

- ``cartflow_sagas_stuck``: the sagas ``recover_sagas`` would pick up now (orders/saga/stuck.py,
  ``sagas_stuck``): a lease that lapsed mid-step, a hold past its expiry nothing compensated, a saga left
  half-way. Counted over the partial index of active sagas (``saga_active_lease``), so its cost follows the
  checkouts under way, not the table.
- ``cartflow_outbox_lag_seconds``: the age of the oldest unprocessed outbox row (0 when none), one row read
  through the partial index of unprocessed rows (``outbox_unprocessed``).

Read at scrape time rather than by the beat jobs: the gauges stay true when beat or the workers are what
stopped, and every web host answers the same (shared) figures. Each scrape runs the two reads in one
transaction under a short ``statement_timeout``; a database that does not answer yields no samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from orders.models import Outbox
from orders.saga.stuck import sagas_stuck

log = structlog.get_logger("cartflow.metrics")

STATEMENT_TIMEOUT_MS = 1000


class BacklogCollector:
    def describe(self) -> list[GaugeMetricFamily]:
        """Names for the registry, so registering does not query the database."""
        return [
            GaugeMetricFamily("cartflow_sagas_stuck", ""),
            GaugeMetricFamily("cartflow_outbox_lag_seconds", ""),
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
                stuck = sagas_stuck().count()
                oldest = (
                    Outbox.objects.filter(processed_at__isnull=True)
                    .order_by("id")
                    .values_list("created_at", flat=True)
                    .first()
                )
        except DatabaseError as exc:  # /metrics answers while PostgreSQL is slow or away
            log.warning("backlog_metrics_unavailable", error=f"{exc.__class__.__name__}: {exc}")
            return
        yield GaugeMetricFamily(
            "cartflow_sagas_stuck", "Sagas recover_sagas would resume now (lease lapsed, hold expired, half-way).",
            value=stuck,
        )  # fmt: skip
        lag = max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0
        yield GaugeMetricFamily(
            "cartflow_outbox_lag_seconds", "Age of the oldest unprocessed outbox row (0 when none).", value=lag
        )
