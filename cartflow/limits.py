"""Requests refused before any view, parser or signature check reads them.

- A declared body over ``CARTFLOW_MAX_BODY_BYTES`` → 413 ``payload_too_large``, on every path (the Stripe
  webhook too: its signature check needs the whole body in memory). Django reads no more than the declared
  length, so a body without one is never read past it.
- A path holding a NUL or another control character → 404 ``not_found``: no route or identifier has one,
  and PostgreSQL refuses NUL in text, so such an id would otherwise fail inside a query.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from cartflow.exceptions import django_problem_response

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def declared_body_bytes(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # Django reads an unparseable length as no body at all


class RequestLimitsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.CARTFLOW_MAX_BODY_BYTES
        if declared_body_bytes(request) > limit:
            return django_problem_response(
                request, "payload_too_large", f"The request body is larger than {limit} bytes.", limit=limit
            )
        if _CONTROL.search(request.path_info):
            return django_problem_response(request, "not_found", "No resource has a control character in its path.")
        return self.get_response(request)
