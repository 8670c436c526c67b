"""Every error under /api is an RFC 9457 problem (docs/api.md, "General"); request ids; structured logs.

The module doubles as a test-only URLConf (``@pytest.mark.urls(__name__)``): the project's routes plus
views that fail on purpose (malformed JSON, throttling, an unexpected database error).
"""

from __future__ import annotations

import io
import json
import logging
import re

import psycopg
import pytest
import structlog
from django.test import Client
from django.urls import include, path
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from cartflow.logconfig import logging_dict
from cartflow.problems import REGISTRY

SECRET_SQL = 'relation "payments_secret_table" does not exist LINE 1: SELECT card_number FROM payments_secret_table'


class _EchoInputSerializer(serializers.Serializer):
    quantity = serializers.IntegerField(min_value=1)


class _EchoApi(APIView):
    def post(self, request):  # noqa: ANN001, ANN201
        data = _EchoInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(data.validated_data)


class _OncePerMinute(AnonRateThrottle):
    rate = "1/min"
    scope = "foundation_test"


class _ThrottledApi(APIView):
    throttle_classes = [_OncePerMinute]

    def get(self, request):  # noqa: ANN001, ANN201
        return Response({"ok": True})


class _DatabaseBoomApi(APIView):
    def get(self, request):  # noqa: ANN001, ANN201
        raise psycopg.errors.UndefinedTable(SECRET_SQL)


def _plain_django_boom(request):  # noqa: ANN001, ANN202 - not a DRF view: Django's handler500 answers
    raise RuntimeError(SECRET_SQL)


urlpatterns = [
    path("api/_test/echo", _EchoApi.as_view()),
    path("api/_test/throttled", _ThrottledApi.as_view()),
    path("api/_test/boom", _DatabaseBoomApi.as_view()),
    path("api/_test/plain-boom", _plain_django_boom),
    path("", include("cartflow.urls")),
]
handler404 = "cartflow.exceptions.api_404"
handler500 = "cartflow.exceptions.api_500"

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def assert_problem(resp, status: int, code: str) -> dict:  # noqa: ANN001
    """The RFC 9457 shape of docs/api.md: content type, members, type URI from the registry, request id."""
    assert resp.status_code == status, resp.content
    assert resp["Content-Type"] == "application/problem+json"
    body = json.loads(resp.content)
    for member in ("type", "title", "status", "detail", "instance", "code", "requestId"):
        assert member in body, f"{member} missing from {body}"
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == REGISTRY[code].type_uri == f"/problems/{code.replace('_', '-')}"
    assert body["title"] == REGISTRY[code].title
    assert body["instance"] == resp.wsgi_request.path
    assert body["requestId"] == resp["X-Request-Id"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_unknown_api_path_is_404_not_found(api_client):
    assert_problem(api_client.get("/api/no/such/thing"), 404, "not_found")


def test_bare_api_root_is_404_not_found(api_client):
    assert_problem(api_client.get("/api"), 404, "not_found")


def test_wrong_method_is_405_method_not_allowed(api_client):
    body = assert_problem(api_client.post("/api/products", {}, format="json"), 405, "method_not_allowed")
    assert "POST" in body["detail"]


def test_malformed_json_is_400_malformed_json(api_client):
    resp = api_client.post("/api/_test/echo", data='{"quantity": 1,', content_type="application/json")
    assert_problem(resp, 400, "malformed_json")


def test_serializer_error_is_400_validation_error_with_errors(api_client):
    resp = api_client.post("/api/_test/echo", {"quantity": 0}, format="json")
    body = assert_problem(resp, 400, "validation_error")
    assert body["errors"] == [
        {"field": "quantity", "code": "min_value", "detail": "Ensure this value is greater than or equal to 1."}
    ]


def test_query_parameter_error_is_a_validation_error(api_client):
    body = assert_problem(api_client.get("/api/products?page=0"), 400, "validation_error")
    assert [(e["field"], e["code"]) for e in body["errors"]] == [("page", "min_value")]


def test_throttling_is_429_rate_limited_with_retry_after(api_client):
    assert api_client.get("/api/_test/throttled").status_code == 200
    resp = api_client.get("/api/_test/throttled")
    assert_problem(resp, 429, "rate_limited")
    assert 1 <= int(resp["Retry-After"]) <= 60


def _capture_logs() -> tuple[io.StringIO, logging.Handler]:
    """A root handler rendering exactly like production (cartflow.logconfig's JSON formatter)."""
    spec = logging_dict(fmt="json")["formatters"]["structlog"]
    handler = logging.StreamHandler(buf := io.StringIO())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processors=spec["processors"], foreign_pre_chain=spec["foreign_pre_chain"])
    )
    logging.getLogger().addHandler(handler)
    return buf, handler


def _log_lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("url", ["/api/_test/boom", "/api/_test/plain-boom"])
def test_unexpected_error_is_500_without_traceback_or_sql_but_logged(url):
    client = Client(raise_request_exception=False)
    buf, handler = _capture_logs()
    try:
        resp = client.get(url, HTTP_X_REQUEST_ID="boom-req-1")
    finally:
        logging.getLogger().removeHandler(handler)
    body = assert_problem(resp, 500, "internal_error")
    text = resp.content.decode()
    for leak in ("Traceback", "payments_secret_table", "SELECT", "psycopg", "RuntimeError", "settings"):
        assert leak not in text, f"{leak!r} leaked into {text}"
    assert body["requestId"] == "boom-req-1"
    # ... while the log keeps the whole story, under the same request id.
    errors = [line for line in _log_lines(buf) if line.get("level") == "error"]
    assert errors, buf.getvalue()
    assert any(
        line.get("request_id") == "boom-req-1" and "payments_secret_table" in json.dumps(line.get("exception", ""))
        for line in errors
    ), errors


def test_request_log_line_carries_the_request_id(api_client):
    buf, handler = _capture_logs()
    try:
        api_client.get("/api/products", HTTP_X_REQUEST_ID="log-req-42")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [line for line in _log_lines(buf) if line.get("event") == "request"]
    assert lines, buf.getvalue()
    assert lines[-1]["request_id"] == "log-req-42"
    assert lines[-1]["path"] == "/api/products" and lines[-1]["status"] == 200
    assert "timestamp" in lines[-1] and lines[-1]["logger"] == "cartflow.request"


def test_well_formed_request_id_is_echoed(api_client):
    resp = api_client.get("/api/no-such", HTTP_X_REQUEST_ID="client-abc.123:x_y-z")
    assert resp["X-Request-Id"] == "client-abc.123:x_y-z"
    assert resp.json()["requestId"] == "client-abc.123:x_y-z"


@pytest.mark.parametrize("bad", ["has spaces", "<script>", "x" * 200, "é"])
def test_malformed_request_id_is_replaced(api_client, bad):
    resp = api_client.get("/api/no-such", HTTP_X_REQUEST_ID=bad)
    assert resp["X-Request-Id"] != bad
    assert re.fullmatch(r"[0-9a-f]{32}", resp["X-Request-Id"])
    assert resp.json()["requestId"] == resp["X-Request-Id"]


def test_every_response_has_a_request_id(api_client):
    for url in ("/healthz", "/api/products", "/problems/"):
        assert re.fullmatch(r"[0-9a-f]{32}", api_client.get(url)["X-Request-Id"])


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_problem_page_exists_for_every_registry_code(client, code):
    problem = REGISTRY[code]
    resp = client.get(problem.type_uri)
    assert resp.status_code == 200
    html = resp.content.decode()
    assert problem.code in html and problem.title in html and str(problem.status) in html


def test_problem_index_links_every_code(client):
    html = client.get("/problems/").content.decode()
    for problem in REGISTRY.values():
        assert f'href="{problem.type_uri}"' in html


def test_unknown_problem_page_is_404(client):
    assert client.get("/problems/no-such-problem").status_code == 404
