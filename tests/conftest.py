"""Shared fixtures: the real PostgreSQL (pytest-django's test database) and the real Redis.

Tests use the Redis named by REDIS_URL (default: the local one, logical DB 14) and flush that DB
before each test that asks for ``redis_client`` or uses the cache.
"""

from __future__ import annotations

import time

import pytest
import redis as redis_lib
from django.conf import settings


@pytest.fixture
def redis_client():
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_cache(request):
    """Every test starts from an empty cache DB, so cached catalog rows never leak between tests."""
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    client.close()
    yield


@pytest.fixture(autouse=True)
def _crash_points_disarmed():
    """No test starts or leaves with a saga crash point armed (orders/saga/crashpoints.py is one-shot, but a
    test that fails before its point fires would leave it armed for the next)."""
    from orders.saga.crashpoints import crash_points

    crash_points.clear()
    yield
    crash_points.clear()


@pytest.fixture
def staff(client, django_user_model):  # noqa: ANN001, ANN201 - pytest-django's fixtures
    """Django's test client signed in to admin as a superuser ("ops"); the user is ``staff.user``."""
    user = django_user_model.objects.create_superuser(username="ops", password="pw", email="ops@example.com")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


pytest_plugins = [
    "tests.support.emulator",
    "tests.support.worker",
    "tests.support.beat",
    "tests.support.services",
    "tests.support.receiver",
]


@pytest.fixture
def fresh_throttle_window():
    """CartFlow's throttles count in fixed windows (cartflow/throttling.py): a test of a per-minute rate that
    crossed a minute's end would see its count start again and its refusal not come. Such a test starts
    with at least 15 s of the minute left."""
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 0.05)
