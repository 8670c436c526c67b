"""The persistent connection's health check (cartflow/db/base.py): a connection PostgreSQL closed between
two requests is replaced before the next request's first query, and a healthy idle one is checked without
a round trip."""

from __future__ import annotations

import tempfile
import time

import psycopg
import pytest
from django.db import connection, transaction

pytestmark = pytest.mark.django_db(transaction=True)


def _backend_pid() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def _terminate(pid: int) -> None:
    """From a connection of its own, as an operator or a failover would: the backend gets PostgreSQL's
    "terminating connection" and exits."""
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"}, autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
        for _ in range(100):
            if not other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} still runs")


def _request_starts() -> None:
    """What Django does on ``request_started`` (``close_old_connections``): the next query runs the check."""
    connection.close_if_unusable_or_obsolete()


def test_a_connection_terminated_between_requests_is_replaced_before_the_next_query(settings):
    assert connection.settings_dict["ENGINE"] == "cartflow.db"
    assert connection.health_check_enabled
    first = _backend_pid()
    _terminate(first)

    _request_starts()
    second = _backend_pid()  # without the check this query fails: the server closed the connection

    assert second != first


def _protocol_messages(during) -> str:  # noqa: ANN001
    """libpq's own trace of what the connection sent and received while ``during()`` ran."""
    pgconn = connection.connection.pgconn
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        try:
            during()
        finally:
            pgconn.untrace()
        trace.seek(0)
        return trace.read()


def test_a_healthy_idle_connection_is_checked_without_a_round_trip():
    _backend_pid()  # connected and idle, as between two requests
    idle = _protocol_messages(connection.is_usable)
    assert idle == ""
    assert connection.is_usable()

    with transaction.atomic():  # anything but idle gets Django's SELECT 1
        _backend_pid()
        in_transaction = _protocol_messages(connection.is_usable)
    assert "SELECT 1" in in_transaction


def test_a_closed_or_broken_connection_is_not_usable():
    _backend_pid()
    assert connection.is_usable()
    connection.connection.close()
    assert not connection.is_usable()
    connection.close()
