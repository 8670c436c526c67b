"""Readiness checks against the backing services, each bounded by a short timeout."""

from __future__ import annotations

import kombu
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


def _broker(url: str) -> str:
    """A Redis broker is pinged; any other (RabbitMQ's ``amqp://``) is connected to through kombu, Celery's
    own transport layer, which for AMQP means the TCP connection and the protocol handshake with the
    broker's credentials, then closed."""
    if url.startswith(("redis", "unix")):
        return _ping(url)
    try:
        with kombu.Connection(url, connect_timeout=0.5) as conn:
            conn.connect()
        return "ok"
    except Exception:  # noqa: BLE001
        return "unreachable"


def readiness_checks() -> dict[str, str]:
    return {
        "database": _check_database(),
        "redis": _ping(settings.REDIS_URL),
        "broker": _broker(settings.CELERY_BROKER_URL),
    }
