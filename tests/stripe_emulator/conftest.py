"""Fixtures of the emulator's own tests; they need neither Django nor CartFlow, only pytest and ``stripe``.

- ``emulator_server`` (session): one ``EmulatorServer`` on a free port for these tests.
- ``emulator`` (function): resets it and yields an ``EmulatorHandle`` (support.py) to steer it.
- ``emulator_factory`` (function): ``emulator_factory(**EmulatorServer kwargs)`` starts another emulator on a
  free port (e.g. with ``latency_ms`` or ``rate_limits``) and returns its handle; stopped after the test.
- ``receiver`` (function): a webhook endpoint the emulator delivers to, recording what it gets.
"""

from __future__ import annotations

from typing import Any

import pytest

from stripe_emulator import EmulatorServer
from tests.stripe_emulator.support import WEBHOOK_SECRET, EmulatorHandle, Receiver


@pytest.fixture(scope="session")
def emulator_server():
    server = EmulatorServer(
        port=0, webhook_url=None, webhook_secret=WEBHOOK_SECRET, webhook_retry_base=0.05, webhook_timeout=2.0
    ).start()
    yield server
    server.stop()


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorHandle:
    emulator_server.set_webhook_url(None)
    emulator_server.reset()
    yield EmulatorHandle(emulator_server)
    emulator_server.set_webhook_url(None)
    emulator_server.reset()


@pytest.fixture
def emulator_factory():
    started: list[EmulatorServer] = []

    def start(**kwargs: Any) -> EmulatorHandle:
        kwargs = {"port": 0, "webhook_url": None, "webhook_secret": WEBHOOK_SECRET, **kwargs}
        server = EmulatorServer(**kwargs).start()
        started.append(server)
        return EmulatorHandle(server)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def receiver(emulator: EmulatorHandle):
    rec = Receiver()
    emulator.set_webhook_url(rec.url)
    yield rec
    rec.close()
