"""Idempotency-Key for unsafe endpoints (docs/api.md, "Idempotency-Key"), stored in PostgreSQL.

Decorate an APIView handler with :func:`idempotent`::

    class CheckoutStartApi(APIView):
        def idempotency_scope(self, request) -> str: ...   # optional: default is the user, else the client

        @idempotent
        def post(self, request): ...

- No header: the handler runs as usual.
- First use of a key: the record is inserted (unique on scope + key) and locked while the handler runs;
  its final response is stored (2xx and 4xx; 5xx, 429 and anything with ``Retry-After`` is not final,
  so the record is dropped and a retry runs again).
- Same key, same fingerprint (method + path + canonical JSON body) → the stored response, replayed with
  ``Idempotent-Replayed: true``. Different fingerprint → 422 ``idempotency_key_reused``. Still running →
  409 ``idempotency_request_in_progress`` with ``Retry-After``. A lock that lapsed (the process died) is
  taken over by the retry. Records older than ``CARTFLOW_IDEMPOTENCY_TTL_SECONDS`` (24 h) are replaced.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework.response import Response

from cartflow.exceptions import problem_response
from cartflow.models import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
_KEPT_HEADERS = ("Location", "Retry-After")  # Content-Type: only when the view chose one (problem+json)


def clock() -> datetime:
    """The clock the key's window and lock are measured with (tests move it instead of sleeping)."""
    return timezone.now()


def _ttl() -> timedelta:
    return timedelta(seconds=settings.CARTFLOW_IDEMPOTENCY_TTL_SECONDS)


def _lock() -> timedelta:
    return timedelta(seconds=settings.CARTFLOW_IDEMPOTENCY_LOCK_SECONDS)


def request_fingerprint(request: Any) -> str:
    """sha256 of method, path and the body as canonical JSON (key order and spacing do not matter)."""
    try:
        body = request.data
    except Exception:  # noqa: BLE001 - an unparsable body fingerprints as its raw bytes
        body = None
    canonical = json.dumps(body if body is not None else {}, sort_keys=True, separators=(",", ":"), default=str)
    raw = f"{request.method}\n{request.path}\n{canonical}".encode()
    return hashlib.sha256(raw).hexdigest()


def default_scope(request: Any) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{request.META.get('REMOTE_ADDR', '')}"


def _final(response: Response) -> bool:
    """Responses worth replaying: the outcome is settled (not a 5xx, throttle or "retry later")."""
    return response.status_code < 500 and response.status_code != 429 and not response.has_header("Retry-After")


def _claim(scope: str, key: str, fingerprint: str) -> tuple[str, IdempotencyRecord | None]:
    """("run", record) when this request owns the key now; else ("replay" | "reused" | "busy", record)."""
    now = clock()
    for _ in range(3):
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    scope=scope, key=key, fingerprint=fingerprint, locked_until=now + _lock(), created_at=now
                )
            return "run", record
        except IntegrityError:
            pass
        record = IdempotencyRecord.objects.filter(scope=scope, key=key).first()
        if record is None:
            continue  # deleted in between (a non-final response): try inserting again
        if record.created_at < now - _ttl():
            IdempotencyRecord.objects.filter(pk=record.pk, created_at=record.created_at).delete()
            continue
        if record.fingerprint != fingerprint:
            return "reused", record
        if record.completed_at is not None:
            return "replay", record
        # Running, or its process died: take the record over once the lock has lapsed.
        taken = IdempotencyRecord.objects.filter(
            Q(locked_until__lt=now) | Q(locked_until__isnull=True), pk=record.pk, completed_at__isnull=True
        ).update(locked_until=now + _lock())
        if taken:
            record.locked_until = now + _lock()
            return "run", record
        return "busy", record
    return "busy", None


def _store(record: IdempotencyRecord, response: Response) -> None:
    if not _final(response):
        IdempotencyRecord.objects.filter(pk=record.pk, completed_at__isnull=True).delete()
        return
    headers = {h: response[h] for h in _KEPT_HEADERS if response.has_header(h)}
    if response.content_type:
        headers["Content-Type"] = response.content_type
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        response_status=response.status_code,
        response_body=json.loads(json.dumps(response.data, default=str)),
        response_headers=headers,
        completed_at=clock(),
        locked_until=None,
    )


def _replay(record: IdempotencyRecord) -> Response:
    headers = dict(record.response_headers or {})
    content_type = headers.pop("Content-Type", None)
    response = Response(record.response_body, status=record.response_status, headers=headers, content_type=content_type)
    response[REPLAYED_HEADER] = "true"
    return response


def idempotent(handler: Callable[..., Response]) -> Callable[..., Response]:
    """Make an APIView handler honour ``Idempotency-Key`` (see the module docstring)."""

    @functools.wraps(handler)
    def wrapper(view: Any, request: Any, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not _KEY_RE.match(key):
            return problem_response(request, "invalid_idempotency_key")
        scope_fn = getattr(view, "idempotency_scope", None)
        scope = (scope_fn(request) if scope_fn else None) or default_scope(request)
        verdict, record = _claim(scope[:100], key, request_fingerprint(request))
        if verdict == "reused":
            return problem_response(
                request, "idempotency_key_reused", f"Idempotency-Key {key!r} was used with a different request."
            )
        if verdict == "busy":
            return problem_response(request, "idempotency_request_in_progress", retry_after=1)
        if verdict == "replay":
            return _replay(record)
        try:
            response = handler(view, request, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - rendered like DRF would, then stored or dropped
            response = view.handle_exception(exc)
        except BaseException:
            raise  # the process is going away: the lock lapses and a retry takes over
        _store(record, response)
        return response

    return wrapper
