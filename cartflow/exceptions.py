"""One exception handler: every error under /api leaves as an RFC 9457 problem.

DRF's exceptions and our :class:`~cartflow.problems.DomainError` go through
:func:`problem_exception_handler`; where Django itself answers an /api path (no DRF view matched, a
rejected request, a CSRF failure, a failure outside a view) :func:`api_400`, :func:`api_403`,
:func:`api_404`, :func:`api_500` and :func:`csrf_failure` answer the same problems. Unexpected exceptions
are logged with their traceback (without frame locals: cartflow/logconfig.py) and answered with a bare
``internal_error``: no stack trace, SQL or secret ever reaches the body.
"""

from __future__ import annotations

from typing import Any

import redis
import structlog
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from django.views.csrf import csrf_failure as django_csrf_failure
from django.views.defaults import bad_request, page_not_found, permission_denied, server_error
from django_redis.exceptions import ConnectionInterrupted
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import set_rollback

from cartflow.middleware import current_request_id
from cartflow.parsers import JSONTooDeep
from cartflow.problems import REGISTRY, DomainError, ProblemBody

log = structlog.get_logger("cartflow.errors")
PROBLEM_CONTENT_TYPE = "application/problem+json"

_DRF_CODES: list[tuple[type[Exception], str]] = [
    (drf.ParseError, "malformed_json"),
    (drf.ValidationError, "validation_error"),
    (drf.NotAuthenticated, "not_authenticated"),
    (drf.AuthenticationFailed, "authentication_failed"),
    (drf.PermissionDenied, "permission_denied"),
    (drf.NotFound, "not_found"),
    (drf.MethodNotAllowed, "method_not_allowed"),
    (drf.NotAcceptable, "not_acceptable"),
    (drf.UnsupportedMediaType, "unsupported_media_type"),
    (drf.Throttled, "rate_limited"),
]


def _instance(request: Any) -> str:
    return getattr(request, "path", "") or ""


def problem_payload(request: Any, code: str, detail: str | None = None, **extensions: Any) -> dict[str, Any]:
    p = REGISTRY[code]
    rid = getattr(request, "request_id", "") or current_request_id()
    return ProblemBody(code, detail or p.description, _instance(request), rid, extensions).as_dict()


def problem_response(
    request: Any,
    code: str,
    detail: str | None = None,
    *,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> Response:
    """A DRF Response holding a problem; usable from any DRF view."""
    body = problem_payload(request, code, detail, **extensions)
    resp = Response(body, status=body["status"], content_type=PROBLEM_CONTENT_TYPE, headers=headers)
    if retry_after is not None:
        resp["Retry-After"] = str(int(retry_after))
    elif REGISTRY[code].retry_after:
        resp["Retry-After"] = "1"
    return resp


def django_problem_response(request: HttpRequest, code: str, detail: str | None = None, **extensions: Any):
    """The same problem from plain Django code (no DRF renderer involved)."""
    body = problem_payload(request, code, detail, **extensions)
    resp = JsonResponse(body, status=body["status"], content_type=PROBLEM_CONTENT_TYPE)
    if REGISTRY[code].retry_after:
        resp["Retry-After"] = "1"
    return resp


def _flatten_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """DRF's nested error dict → [{"field", "code", "detail"}]."""
    out: list[dict[str, str]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            out += _flatten_errors(value, f"{prefix}.{name}" if prefix and name else (prefix or name))
    elif isinstance(detail, list):
        for i, item in enumerate(detail):
            if isinstance(item, dict | list) and not isinstance(item, drf.ErrorDetail):
                out += _flatten_errors(item, f"{prefix}[{i}]" if prefix else f"[{i}]")
            else:
                out += _flatten_errors(item, prefix)
    else:
        out.append({"field": prefix, "code": getattr(detail, "code", "invalid"), "detail": str(detail)})
    return out


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    request = context.get("request")
    if isinstance(exc, DomainError):
        set_rollback()
        return problem_response(
            request, exc.code, exc.detail, retry_after=exc.retry_after, headers=exc.headers, **exc.extensions
        )
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    elif isinstance(exc, SuspiciousOperation):
        set_rollback()
        return _suspicious_problem(request, exc, problem_response)
    if isinstance(exc, drf.APIException):
        set_rollback()
        code = next((c for cls, c in _DRF_CODES if isinstance(exc, cls)), None)
        headers: dict[str, str] = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if code == "validation_error":
            errors = _flatten_errors(exc.detail)
            return problem_response(request, code, "The request has invalid fields.", headers=headers, errors=errors)
        if code == "rate_limited":
            wait = max(1, int(round(exc.wait or 1)))
            return problem_response(request, code, f"Retry after {wait} seconds.", retry_after=wait)
        if code is None:
            code = {
                404: "not_found",
                405: "method_not_allowed",
                401: "not_authenticated",
                403: "permission_denied",
            }.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "validation_error")
        detail = str(exc.detail) if isinstance(exc.detail, str) else None
        if code == "malformed_json" and not isinstance(exc, JSONTooDeep):
            detail = "The request body is not valid JSON."
        elif code == "unsupported_media_type":
            detail = f"{detail} Send the body as JSON, with the header Content-Type: application/json."
        return problem_response(request, code, detail, headers=headers)
    set_rollback()
    if _backing_service_down(exc):
        # PostgreSQL or Redis went away mid-request (restart, failover): a retry will do, so say so.
        log.warning("backing_service_unavailable", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        return problem_response(request, "service_unavailable", "A backing service is unreachable; retry shortly.")
    log.error("unhandled_exception", exc_info=exc)
    return problem_response(request, "internal_error")


def _backing_service_down(exc: Exception) -> bool:
    """A lost connection to PostgreSQL or Redis (not a bug in a query): found by the fault campaign."""
    return redis_connection_lost(exc) or isinstance(
        exc, OperationalError | InterfaceError | redis.ConnectionError | redis.TimeoutError | ConnectionInterrupted
    )


def redis_connection_lost(exc: BaseException) -> bool:
    """redis-py's own failures of a vanished connection that it does not wrap in ConnectionError: an
    ``IndexError: pop from empty list`` raised inside redis-py (``can_read`` on a pooled connection read
    after the server restarted; found by the fault campaign). Judged by where it was raised, so an
    IndexError in our own code stays a 500 bug."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return True
    if not isinstance(exc, IndexError) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module == "redis" or module.startswith("redis.")


def _suspicious_problem(request: Any, exc: SuspiciousOperation, respond: Any) -> Any:
    """Django's refusals of a request (SuspiciousOperation): a body over the limit, or anything else."""
    if isinstance(exc, RequestDataTooBig):
        limit = settings.CARTFLOW_MAX_BODY_BYTES
        return respond(request, "payload_too_large", f"The request body is larger than {limit} bytes.", limit=limit)
    return respond(request, "bad_request", str(exc)[:200] or None)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def api_400(request: HttpRequest, exception: Exception | None = None):
    if not _is_api(request):
        return bad_request(request, exception)
    if isinstance(exception, SuspiciousOperation):
        return _suspicious_problem(request, exception, django_problem_response)
    return django_problem_response(request, "bad_request")


def api_403(request: HttpRequest, exception: Exception | None = None):
    if not _is_api(request):
        return permission_denied(request, exception)
    return django_problem_response(request, "permission_denied")


def csrf_failure(request: HttpRequest, reason: str = ""):
    """``CSRF_FAILURE_VIEW``: a session-authenticated write without a valid CSRF token or origin."""
    if not _is_api(request):
        return django_csrf_failure(request, reason)
    detail = f"CSRF check failed ({reason}). Send the X-CSRFToken header, or sign in with a token."
    return django_problem_response(request, "permission_denied", detail)


def api_404(request: HttpRequest, exception: Exception | None = None):
    if _is_api(request):
        return django_problem_response(request, "not_found", f"Nothing lives at {request.path}.")
    return page_not_found(request, exception)


def api_500(request: HttpRequest):
    if _is_api(request):
        return django_problem_response(request, "internal_error")
    return server_error(request)
