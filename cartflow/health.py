"""Readiness checks against the backing services, each bounded by a short timeout."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection


def _check_database() -> str:
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        return "ok"
    except Exception:  # noqa: BLE001 - any failure means not ready
        connection.close()
        return "unreachable"


def _ping(url: str) -> str:
    try:
        url = url.replace("redis+socket://", "unix://").split("?")[0] if url.startswith("redis+socket") else url
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            client.ping()
        finally:
            client.close()
        return "ok"
    except Exception:  # noqa: BLE001
        return "unreachable"


def readiness_checks() -> dict[str, str]:
    checks = {"database": _check_database(), "redis": _ping(settings.REDIS_URL)}
    broker = settings.CELERY_BROKER_URL
    checks["broker"] = _ping(broker) if broker.startswith(("redis", "unix")) else "ok"
    return checks
