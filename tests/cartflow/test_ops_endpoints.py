"""Operations endpoints: /healthz, /readyz, /metrics, the OpenAPI document and its offline docs."""

from __future__ import annotations

import json
import socket

import pytest
from django.core.management import call_command
from django.test import override_settings

pytestmark = pytest.mark.django_db


def _dead_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthz_answers_without_touching_services(client):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{_dead_port()}/0"):
        resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_readyz_is_200_when_everything_answers(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "broker": "ok"}}


def test_readyz_is_503_problem_when_redis_is_unreachable(client):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{_dead_port()}/0"):
        resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp["Content-Type"] == "application/problem+json"
    body = resp.json()
    assert body["code"] == "service_unavailable"
    assert body["checks"] == {"database": "ok", "redis": "unreachable", "broker": "ok"}
    assert "redis" in body["detail"]
    assert resp["Retry-After"]


def test_readyz_is_503_when_the_broker_is_unreachable(client):
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{_dead_port()}/1"):
        resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["broker"] == "unreachable"


RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def test_readyz_connects_to_a_rabbitmq_broker_and_is_503_when_it_does_not_answer(client):
    """An AMQP broker is really connected to (the machine's RabbitMQ), not assumed to be there."""
    with override_settings(CELERY_BROKER_URL=RABBITMQ):
        up = client.get("/readyz")
    with override_settings(CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{_dead_port()}//"):
        down = client.get("/readyz")
    with override_settings(CELERY_BROKER_URL="amqp://guest:wrong-password@127.0.0.1:5672//"):
        refused = client.get("/readyz")
    assert (up.status_code, up.json()["checks"]["broker"]) == (200, "ok"), up.content
    assert (down.status_code, down.json()["checks"]["broker"]) == (503, "unreachable")
    assert (refused.status_code, refused.json()["checks"]["broker"]) == (503, "unreachable")
    assert "wrong-password" not in refused.content.decode()


def test_metrics_is_prometheus_text(client):
    client.get("/api/products")
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/plain")
    text = resp.content.decode()
    assert "# TYPE django_http_requests_total_by_method_total counter" in text
    assert 'django_http_requests_total_by_method_total{method="GET"}' in text
    assert "django_db_" in text or "django_model_" in text or "process_" in text


def test_openapi_schema_builds_and_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.json"
    # --fail-on-warn turns any drf-spectacular warning (unnamed serializer, unresolvable type...) into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out))
    schema = json.loads(out.read_text())
    assert schema["info"]["title"] == "CartFlow API"
    products = schema["paths"]["/api/products/{productId}"]["get"]["responses"]
    assert "application/problem+json" in products["404"]["content"]
    assert "Problem" in schema["components"]["schemas"]


API_MD_OPERATIONS = [
    ("get", "/api/products"),
    ("get", "/api/products/{productId}"),
    ("get", "/api/cart"),
    ("delete", "/api/cart"),
    ("post", "/api/cart/items"),
    ("put", "/api/cart/items/{productId}"),
    ("delete", "/api/cart/items/{productId}"),
    ("post", "/api/cart/merge"),
    ("post", "/api/auth/token"),
    ("post", "/api/checkout/start"),
    ("post", "/api/checkout/confirm"),
    ("get", "/api/checkout/{checkoutId}"),
    ("post", "/api/checkout/{checkoutId}/cancel"),
    ("get", "/api/orders/{orderId}"),
    ("post", "/api/webhooks/stripe"),
]


def test_the_schema_publishes_every_operation_of_the_api_contract_with_its_path_names(client):
    """docs/api.md's endpoints, path parameters spelled as docs/api.md spells them (camelCase)."""
    paths = json.loads(client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)["paths"]
    missing = [(m, p) for m, p in API_MD_OPERATIONS if m not in paths.get(p, {})]
    assert missing == []
    assert not [p for p in paths if "_id}" in p]


def test_schema_endpoint_serves_the_document(client):
    resp = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert resp.status_code == 200
    assert "/api/products" in json.loads(resp.content)["paths"]


@pytest.mark.parametrize(
    ("url", "asset"),
    [
        ("/api/docs/", "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"),
        ("/api/redoc/", "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"),
    ],
)
def test_docs_are_served_from_local_static_files(client, url, asset):
    resp = client.get(url)
    assert resp.status_code == 200
    html = resp.content.decode()
    assert asset in html
    # Nothing is loaded from a CDN: every script and stylesheet is one of ours.
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html
    static = client.get(asset)
    assert static.status_code == 200
    assert b"".join(static.streaming_content)[:100].strip()
