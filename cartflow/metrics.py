"""``GET /metrics``: Prometheus text for the whole server, whichever worker answers the scrape.

Each counter and histogram is defined beside the code that knows the fact it counts (orders/metrics.py,
payments/metrics.py, payments/budget.py, inventory/flashsale_metrics.py, django-prometheus's middleware);
docs/operations.md, "Metrics", lists them all.

Two kinds of values reach a scrape:

- per process, added up across processes: under gunicorn ``PROMETHEUS_MULTIPROC_DIR`` is set
  (cartflow/gunicorn_conf.py), so prometheus_client keeps each process's values in a memory-mapped file
  there, and a scrape reads every file, those of dead workers included: counters add up across workers
  and never go backwards when one is replaced. Without the variable (tests, ``manage.py runserver``)
  the process's own registry is the answer;
- shared state read at scrape time (flash-sale pools in Redis, stuck sagas and outbox lag in PostgreSQL):
  the collectors apps hand to :func:`register_scrape_collector`, each a few cheap reads.

``CARTFLOW_METRICS_ENABLED=0`` turns the endpoint off (404); ``CARTFLOW_METRICS_TOKEN`` makes it ask for
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import os

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cartflow.exceptions import django_problem_response

_scrape_collectors: list[Collector] = []


def register_scrape_collector(collector: Collector) -> None:
    """Read ``collector`` on every scrape. It must have ``describe()``, so registering reads nothing. One
    collector per class: registering another of the same class (a module imported again) changes nothing."""
    name = f"{type(collector).__module__}.{type(collector).__qualname__}"
    if any(f"{type(existing).__module__}.{type(existing).__qualname__}" == name for existing in _scrape_collectors):
        return
    _scrape_collectors.append(collector)
    REGISTRY.register(collector)  # the registry a process without multiprocess mode answers with


def scrape_registry() -> CollectorRegistry:
    """Every process's values from the multiprocess directory plus the shared state; else this process's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    for collector in _scrape_collectors:
        registry.register(collector)
    return registry


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not settings.CARTFLOW_METRICS_ENABLED:
        raise Http404("metrics are off on this server")
    token = settings.CARTFLOW_METRICS_TOKEN
    if token and not _authorized(request, token):
        response = django_problem_response(
            request, "not_authenticated", "Send the metrics token: Authorization: Bearer <CARTFLOW_METRICS_TOKEN>."
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
