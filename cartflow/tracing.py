"""OpenTelemetry: traces for Django, psycopg, Redis, Celery and outgoing HTTP.

Installed only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; otherwise nothing is instrumented and
tracing costs nothing.
"""

from __future__ import annotations

import os

_installed = False


def install_tracing(service_name: str = "cartflow") -> bool:
    global _installed
    if _installed or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    # Imported only when tracing is on: the OpenTelemetry packages cost start-up time that nothing else needs.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    PsycopgInstrumentor().instrument()
    RedisInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    RequestsInstrumentor().instrument()
    _installed = True
    return True
