"""``manage.py serve_metrics --bind 127.0.0.1:9100``: the metrics of one host on an address of their own.

It answers what ``GET /metrics`` answers (cartflow/metrics.py) from the multiprocess directory the web
workers (and the host's Celery processes) write, so Prometheus can scrape a private port while the public
one serves no metrics (``CARTFLOW_METRICS_ENABLED=0``), or scrape a host that runs only Celery workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cartflow.metrics import scrape_registry


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the signature of the base class
        pass  # one line per scrape would drown the log


class Command(BaseCommand):
    help = "Serve /metrics for this host's PROMETHEUS_MULTIPROC_DIR on its own address."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--bind", default="127.0.0.1:9100", help="HOST:PORT to listen on (127.0.0.1:9100)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            raise CommandError("Set PROMETHEUS_MULTIPROC_DIR to the directory the web workers write.")
        host, _, port = options["bind"].rpartition(":")
        registry = scrape_registry()

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            try:
                body = generate_latest(registry)
            finally:
                connections.close_all()  # the backlog collector's connection: one scrape a minute needs none kept
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
            return [body]

        with make_server(host or "127.0.0.1", int(port), app, handler_class=_QuietHandler) as server:
            self.stdout.write(f"serving metrics on http://{host or '127.0.0.1'}:{port}/metrics", ending="\n")
            self.stdout.flush()
            server.serve_forever()
