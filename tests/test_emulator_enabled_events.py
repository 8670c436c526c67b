"""The emulator's enabled_events: like a Stripe webhook endpoint, only the listed types are delivered."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from payments.emulator import EmulatorServer
from payments.emulator.webhooks import parse_enabled_events
from payments.webhooks.handlers import HANDLED_EVENT_TYPES
from tests.test_emulator_webhooks import CREATE, Receiver, client, receiver  # noqa: F401 - fixtures

ALL_TYPES = ["payment_intent.created", "charge.succeeded", "payment_intent.succeeded"]


def test_only_enabled_types_are_delivered_but_every_event_is_listed(client, stripe_emulator, receiver):  # noqa: F811
    stripe_emulator.set_webhook_url(receiver.url, events=HANDLED_EVENT_TYPES)
    pi = client.v1.payment_intents.create(params=CREATE)
    client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert stripe_emulator.wait_for_webhooks()
    assert receiver.types() == ["payment_intent.succeeded"]
    listed = [event.type for event in client.v1.events.list(params={"limit": 100}).data]
    assert sorted(listed) == sorted(ALL_TYPES)


def test_configure_changes_the_filter_and_star_delivers_everything_again(client, stripe_emulator, receiver):  # noqa: F811
    status = stripe_emulator.webhooks("configure", enabled_events=["charge.succeeded"])
    assert status["enabled_events"] == ["charge.succeeded"]
    client.v1.payment_intents.confirm(
        client.v1.payment_intents.create(params=CREATE).id, params={"payment_method": "pm_card_visa"}
    )
    assert stripe_emulator.wait_for_webhooks()
    assert receiver.types() == ["charge.succeeded"]
    assert stripe_emulator.webhooks("configure", enabled_events="*")["enabled_events"] == ["*"]
    client.v1.payment_intents.create(params=CREATE)
    assert stripe_emulator.wait_for_webhooks()
    assert receiver.types() == ["charge.succeeded", "payment_intent.created"]


def test_reset_restores_the_constructors_filter():
    server = EmulatorServer(port=0, enabled_events="charge.refunded, charge.dispute.created")
    assert server.webhooks.enabled_events == {"charge.refunded", "charge.dispute.created"}
    server.set_enabled_events("*")
    assert server.webhooks.enabled_events is None
    server.reset()
    assert server.webhooks.enabled_events == {"charge.refunded", "charge.dispute.created"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("*", None),
        ("", None),
        ("a.b, c.d ,", frozenset({"a.b", "c.d"})),
        (["a.b", "*"], None),
        (("a.b",), frozenset({"a.b"})),
    ],
)
def test_parse_enabled_events(value, expected):
    assert parse_enabled_events(value) == expected


def test_command_line_takes_the_list_from_the_environment_and_the_flag_wins():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "STRIPE_WEBHOOK_EVENTS": "charge.refunded,payment_intent.succeeded"}
    argv = [sys.executable, "-m", "payments.emulator", "--port", str(port), "--webhook-url", ""]
    for extra, expected in (([], ["charge.refunded", "payment_intent.succeeded"]), (["--enabled-events", "*"], ["*"])):
        proc = subprocess.Popen([*argv, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/webhooks", timeout=1) as response:
                        status = json.loads(response.read())
                    break
                except OSError:
                    assert time.monotonic() < deadline, "emulator did not start"
                    time.sleep(0.05)
            assert status["enabled_events"] == expected
        finally:
            proc.terminate()
            proc.wait(10)
