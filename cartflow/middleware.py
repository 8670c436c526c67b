"""Request id: echo a well-formed incoming ``X-Request-Id`` or make one; bind it for logs and problems."""

from __future__ import annotations

import re
import time
import uuid
from contextvars import ContextVar

import structlog

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_request_id: ContextVar[str] = ContextVar("request_id", default="")
log = structlog.get_logger("cartflow.request")


def current_request_id() -> str:
    return _request_id.get()


class RequestIdMiddleware:
    def __init__(self, get_response):  # noqa: ANN001 - Django middleware protocol
        self.get_response = get_response

    def __call__(self, request):  # noqa: ANN001
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = _request_id.set(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-Id"] = request_id
            if request.path.startswith("/api/"):
                log.info(
                    "request",
                    method=request.method,
                    path=request.path,
                    status=response.status_code,
                    ms=round((time.perf_counter() - started) * 1000, 2),
                )
            return response
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
            _request_id.reset(token)
