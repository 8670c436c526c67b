"""GET /metrics (cartflow/metrics.py): turned off, protected by a token, and every CartFlow metric documented.

tests/cartflow/test_metrics_multiprocess.py runs it under a real gunicorn with several workers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db

OPERATIONS_MD = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_metrics_can_be_turned_off(client):
    with override_settings(CARTFLOW_METRICS_ENABLED=False):
        assert client.get("/metrics").status_code == 404
    assert client.get("/metrics").status_code == 200  # on by default


@override_settings(CARTFLOW_METRICS_TOKEN="s3cret-scrape-token")
@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Token s3cret-scrape-token", "s3cret-scrape-token", "Bearer "]
)
def test_with_a_token_metrics_refuse_anyone_without_it(client, header):
    response = client.get("/metrics", **({"HTTP_AUTHORIZATION": header} if header is not None else {}))
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "not_authenticated"
    assert "cartflow_" not in response.content.decode()


@override_settings(CARTFLOW_METRICS_TOKEN="s3cret-scrape-token")
@pytest.mark.parametrize("header", ["Bearer s3cret-scrape-token", "bearer s3cret-scrape-token"])
def test_with_a_token_metrics_answer_the_bearer(client, header):
    response = client.get("/metrics", HTTP_AUTHORIZATION=header)
    assert response.status_code == 200
    assert "# TYPE cartflow_checkouts_total counter" in response.content.decode()


def test_every_cartflow_metric_is_in_the_table_of_docs_operations_md_and_the_table_names_no_other(client):
    text = client.get("/metrics").content.decode()
    # prometheus_client adds a ``<counter>_created`` gauge outside multiprocess mode: not a metric of ours.
    exposed = {n for n in re.findall(r"^# TYPE (cartflow_\w+) \w+$", text, re.MULTILINE) if not n.endswith("_created")}
    documented = set(re.findall(r"^\| `(cartflow_\w+)`", OPERATIONS_MD.read_text(), re.MULTILINE))
    assert exposed and exposed == documented
