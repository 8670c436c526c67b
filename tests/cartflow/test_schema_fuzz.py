"""Fuzz the API against its own OpenAPI document (schemathesis, in-process WSGI, bounded examples).

Every operation under /api gets generated requests, valid and not; every response must be documented:
no 5xx, a documented status code and content type, a body matching the schema, RFC 9457 problems for
errors. Bounded so the whole file stays well under a minute.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.support.saga import make_product

MAX_EXAMPLES = 12
# What the contract promises about responses. Not "positive data acceptance": the document types headers
# such as If-Match and Idempotency-Key as plain strings, and the server rightly rejects an empty one.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def _schema():  # noqa: ANN202
    from cartflow.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/", application)


schema = _schema()


@pytest.fixture(autouse=True)
def _catalog_and_no_throttle(transactional_db, settings):  # noqa: ANN001 - pytest-django fixtures
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"cart_write": "100000/min", "checkout": "100000/min"},
    }
    make_product(on_hand=5)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_answers_as_documented(case, stripe_emulator):  # noqa: ANN001
    response = case.call()
    case.validate_response(response, checks=CHECKS)
