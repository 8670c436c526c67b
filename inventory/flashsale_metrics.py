"""Prometheus metrics of flash-sale admission, exposed on /metrics (cartflow/metrics.py).

Two kinds:

- per process, added up across processes by /metrics (prometheus_client Counter/Histogram): rejections by
  reason, settlements, and the server-side latency of admission decisions (the one Redis script call);
- cluster-wide, read from Redis when /metrics is scraped (a custom collector): tokens free and in flight
  per product, holders, queued tickets, and the pool's own counters (admitted, sold_out, busy, returned,
  consumed) that every process increments inside the Lua scripts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cartflow.metrics import register_scrape_collector
from inventory.flashsale_keys import FREE, HELD, INFLIGHT, QUEUE, STATS, redis_client, text

log = logging.getLogger(__name__)

REJECTIONS = Counter(
    "cartflow_flash_rejections_total", "Checkout starts refused by the flash-sale pool, by reason.", ["reason"]
)
ADMISSIONS = Counter("cartflow_flash_admissions_total", "Checkout starts that took flash-sale tokens.")
SETTLEMENTS = Counter(
    "cartflow_flash_settlements_total", "Holders whose tokens were returned or consumed.", ["outcome"]
)
DECISION_SECONDS = Histogram(
    "cartflow_flash_admission_seconds",
    "Server time of one admission decision (token take), by outcome.",
    ["outcome"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
QUEUE_WAIT_SECONDS = Histogram(
    "cartflow_flash_queue_wait_seconds",
    "Time from joining the fair queue to being admitted.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)


def rejected(reason: str, seconds: float) -> None:
    REJECTIONS.labels(reason=reason).inc()
    DECISION_SECONDS.labels(outcome=reason).observe(seconds)


def admitted(seconds: float) -> None:
    ADMISSIONS.inc()
    DECISION_SECONDS.labels(outcome="admitted").observe(seconds)


def settled(outcome: str) -> None:
    SETTLEMENTS.labels(outcome=outcome).inc()


class PoolCollector:
    """Reads the pool from Redis at scrape time (a few HGETALLs); a Redis outage yields no samples."""

    def describe(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        """Names for the registry, so registering does not call collect() (and Redis) at import."""
        return [
            GaugeMetricFamily("cartflow_flash_tokens_free", "", labels=["product_id"]),
            GaugeMetricFamily("cartflow_flash_tokens_inflight", "", labels=["product_id"]),
            GaugeMetricFamily("cartflow_flash_queue_tickets", "", labels=["product_id"]),
            GaugeMetricFamily("cartflow_flash_holders", ""),
            CounterMetricFamily("cartflow_flash_pool_outcomes", "", labels=["outcome"]),
        ]

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            client = redis_client()
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(FREE)
            pipe.hgetall(INFLIGHT)
            pipe.hlen(HELD)
            pipe.hgetall(STATS)
            free, inflight, holders, stats = pipe.execute()
            queued = {}
            if free:
                pipe = client.pipeline(transaction=False)
                for pid in free:
                    pipe.zcard(f"{QUEUE}{text(pid)}")
                queued = dict(zip(free, pipe.execute(), strict=True))
        except Exception:  # noqa: BLE001 - /metrics must answer while Redis is down
            log.warning("flash-sale metrics: Redis unreachable")
            return
        tokens = GaugeMetricFamily("cartflow_flash_tokens_free", "Tokens free to take now.", labels=["product_id"])
        held = GaugeMetricFamily(
            "cartflow_flash_tokens_inflight", "Tokens held by checkouts in progress.", labels=["product_id"]
        )
        waiting = GaugeMetricFamily("cartflow_flash_queue_tickets", "Tickets in the fair queue.", labels=["product_id"])
        for pid, value in free.items():
            label = text(pid)
            tokens.add_metric([label], int(value))
            held.add_metric([label], int(inflight.get(pid, 0)))
            waiting.add_metric([label], int(queued.get(pid, 0)))
        yield tokens
        yield held
        yield waiting
        yield GaugeMetricFamily("cartflow_flash_holders", "Checkouts holding flash-sale tokens.", value=holders)
        outcomes = CounterMetricFamily(
            "cartflow_flash_pool_outcomes", "Pool decisions across every process (from Redis).", labels=["outcome"]
        )
        for name, value in stats.items():
            outcomes.add_metric([text(name)], int(value))
        yield outcomes


register_scrape_collector(PoolCollector())
