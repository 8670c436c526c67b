"""OpenAPI pieces built from the problem registry, so every endpoint documents its problem responses.

Use :func:`problem_responses` in ``@extend_schema(responses={...})``::

    @extend_schema(responses={201: CartOutput, **problem_responses("product_not_found", "insufficient_stock")})
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers

from cartflow.problems import REGISTRY

PROBLEM_MEDIA = "application/problem+json"
# Every /api endpoint can answer these.
ALWAYS = ("rate_limited", "internal_error")
# Every endpoint with a JSON body can also answer these.
WITH_BODY = ("malformed_json", "validation_error", "payload_too_large", "unsupported_media_type")


class ProblemFieldErrorSerializer(serializers.Serializer):
    field = serializers.CharField()
    code = serializers.CharField()
    detail = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details, with CartFlow's `code` and `requestId` and the code-specific members."""

    type = serializers.CharField(help_text="URI of the problem type, e.g. /problems/insufficient-stock")
    title = serializers.CharField()
    status = serializers.IntegerField(help_text="The HTTP status code.")
    detail = serializers.CharField()
    instance = serializers.CharField(help_text="The request path.")
    code = serializers.ChoiceField(choices=sorted(REGISTRY), help_text="Stable machine-readable code.")
    requestId = serializers.CharField(help_text="Echoes X-Request-Id.")  # noqa: N815 - wire name
    errors = ProblemFieldErrorSerializer(many=True, required=False, help_text="validation_error only.")
    productId = serializers.IntegerField(required=False)  # noqa: N815
    available = serializers.IntegerField(required=False)
    currentVersion = serializers.IntegerField(required=False)  # noqa: N815
    cartCurrency = serializers.CharField(required=False)  # noqa: N815
    productCurrency = serializers.CharField(required=False)  # noqa: N815
    declineCode = serializers.CharField(required=False)  # noqa: N815
    checkoutId = serializers.CharField(required=False)  # noqa: N815
    checkoutStatus = serializers.CharField(required=False)  # noqa: N815
    checks = serializers.DictField(child=serializers.CharField(), required=False)
    limit = serializers.IntegerField(required=False)
    cartTokenSent = serializers.BooleanField(required=False)  # noqa: N815


def problem_responses(*codes: str, body: bool = False) -> dict[Any, OpenApiResponse]:
    """``{(status, 'application/problem+json'): OpenApiResponse}`` for the given codes plus the usual ones."""
    wanted = list(dict.fromkeys([*codes, *(WITH_BODY if body else ()), *ALWAYS]))
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in wanted:
        by_status[REGISTRY[code].status].append(code)
    out: dict[Any, OpenApiResponse] = {}
    for status, status_codes in sorted(by_status.items()):
        description = "; ".join(f"`{c}`: {REGISTRY[c].title}" for c in status_codes)
        examples = [
            OpenApiExample(
                c,
                value={
                    "type": REGISTRY[c].type_uri,
                    "title": REGISTRY[c].title,
                    "status": status,
                    "detail": REGISTRY[c].description,
                    "instance": "/api/...",
                    "code": c,
                    "requestId": "4f9c0e3b2a7d4c1e8b5a6f7e9d0c1b2a",
                },
                response_only=True,
                status_codes=[str(status)],
                media_type=PROBLEM_MEDIA,
            )
            for c in status_codes
        ]
        out[(status, PROBLEM_MEDIA)] = OpenApiResponse(ProblemSerializer, description=description, examples=examples)
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def camelize_path_parameters(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular post-processing hook: path parameters in camelCase, as docs/api.md writes them.

    The URL patterns keep Python names (``product_id``); only the published names change
    (``/api/cart/items/{productId}``), which does not change any URL a client sends.
    """
    paths = {}
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "path":
                    parameter["name"] = _camel(parameter["name"])
        paths[re.sub(r"\{(\w+)\}", lambda m: "{" + _camel(m.group(1)) + "}", path)] = operations
    result["paths"] = paths
    return result
