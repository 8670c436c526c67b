"""The multi-host run's verdict (bench/multihost.py ``verdict``): every check can fail, and none passes on
missing facts.

`make multihost` takes minutes and needs HAProxy and RabbitMQ, so it is not part of the suite; its verdict is a
pure function of the facts it collects, and here each check is given facts that must fail it (and only it),
starting from the facts of a clean run.
"""

from __future__ import annotations

import copy
import signal

import pytest

from bench.multihost import haproxy_config, verdict

MIN_CONFIRMED = 100
WORKERS = "two Celery workers on RabbitMQ shared the tasks"


def clean_facts() -> dict:
    return {
        "rush": {"seconds": 40.0, "confirmed": 450, "gone_products": 16, "rate_limited": 0},
        "served_before_kill": {"web-a": 700, "web-b": 690},
        "kill": {"victim": "web-a", "pid": 101, "existed": True, "exit": -signal.SIGKILL, "at": 12.0,
                 "port_closed": True},
        "failover": {"down_after_s": 0.6, "confirmed_while_down": 150, "survivor_sessions_while_down": 600},
        "rejoin": {"up_after_s": 1.2, "sessions_after": 300},
        "workers": {"broker": "amqp://guest:guest@127.0.0.1:5672/cartflow-multihost-1",
                    "tasks": {"worker-a": 700, "worker-b": 650},
                    "queues": {"celery": {"messages": 0, "consumers": 2}}},
        "beat": {"processes": 1, "release_runs": 9, "seconds": 95.0, "interval": 10},
        "non_terminal": 0,
        "healed_after_s": 12.0,
        "sagas": {"fulfilled": 450, "expired": 3},
        "check_invariants": "clean",
        "reconcile_payments": "no drift",
        "oversold": {},
        "sold": {"units": 450, "stock": 480},
        "orders_with_several_intents": [],
        "double_charges": [],
        "money_without_goods": [],
        "goods_without_money": [],
        "charges": {"succeeded_per_confirmed_order": {1: 450}, "payment_rows_not_succeeded": []},
        "webhook_events": {"processed": 450},
        "cart_writes": {"checkouts": 453, "applied_more_than_sent": []},
        "webhook_deliveries": {"events": 900, "given_up": [], "left": 0, "attempts": {"2xx": 900, "503": 4}},
        "told": {
            "chk_ok": {"confirmed": True, "failed_on_server": False},
            # no answer while its server died, then the saga finished it: the buyer got the goods
            "chk_killed_healed": {"confirmed": False, "failed_on_server": True},
        },
        "final": {
            "chk_ok": {"order": "fulfilled", "charged": True, "refunded": False},
            "chk_killed_healed": {"order": "fulfilled", "charged": True, "refunded": False},
        },
        "throttle": {"trusted_proxies_supported": True, "attempts": 45, "rate": "20/min",
                     "attacker": {401: 20, 429: 25}, "bystander": {401: 1}},
    }  # fmt: skip


def statuses(facts: dict) -> dict[str, str]:
    return {c.name: c.status for c in verdict(facts, min_confirmed=MIN_CONFIRMED)}


def failing(facts: dict) -> list[str]:
    return [name for name, status in statuses(facts).items() if status != "pass"]


def test_a_clean_run_passes_every_check():
    assert failing(clean_facts()) == []
    assert len(statuses(clean_facts())) == 17


def test_no_facts_fail_every_check_but_the_pending_one():
    result = statuses({})
    assert result.pop("throttles per real client") == "pending"
    assert set(result.values()) == {"fail"}


def _set(path: str, value: object) -> dict:
    facts = copy.deepcopy(clean_facts())
    *parents, leaf = path.split(".")
    node = facts
    for key in parents:
        node = node[key]
    node[leaf] = value
    return facts


@pytest.mark.parametrize(
    ("path", "value", "check"),
    [
        ("rush.confirmed", 99, "the rush sold through the balancer"),
        ("rush.gone_products", 0, "the rush sold through the balancer"),
        ("served_before_kill.web-b", 0, "both web servers served the rush"),
        ("kill.exit", -signal.SIGTERM, "a web server was SIGKILLed mid-rush"),
        ("kill.port_closed", False, "a web server was SIGKILLed mid-rush"),
        ("kill.at", 45.0, "a web server was SIGKILLed mid-rush"),
        ("failover.down_after_s", None, "the balancer failed over"),
        ("failover.confirmed_while_down", 0, "the balancer failed over"),
        ("failover.survivor_sessions_while_down", 0, "the balancer failed over"),
        ("rejoin.up_after_s", None, "the restarted web server rejoined"),
        ("rejoin.sessions_after", 0, "the restarted web server rejoined"),
        ("workers.broker", "redis://127.0.0.1:6379/1", WORKERS),
        ("workers.tasks", {"worker-a": 1350}, WORKERS),
        ("workers.tasks", {"worker-a": 1350, "worker-b": 0}, WORKERS),
        ("workers.queues", {"celery": {"messages": 3, "consumers": 2}}, WORKERS),
        ("beat.processes", 2, "exactly one beat"),
        ("beat.release_runs", 19, "exactly one beat"),  # two schedulers: twice the runs
        ("beat.release_runs", 0, "exactly one beat"),
        ("non_terminal", 2, "sagas terminal without a human"),
        ("check_invariants", "stock 3: reserved 2 != held 1", "check_invariants"),
        ("reconcile_payments", "1 needs a human", "reconcile_payments"),
        ("oversold", {7: {"sold": 31, "on_hand": 0}}, "zero oversell"),
        ("sold.units", 481, "zero oversell"),
        ("charges.succeeded_per_confirmed_order", {1: 449, 0: 1}, "exactly one succeeded charge per confirmed order"),
        ("charges.succeeded_per_confirmed_order", {1: 449, 2: 1}, "exactly one succeeded charge per confirmed order"),
        ("charges.payment_rows_not_succeeded", ["ord_1"], "exactly one succeeded charge per confirmed order"),
        ("double_charges", ["ord_1"], "exactly one succeeded charge per confirmed order"),
        ("money_without_goods", ["ord_1"], "exactly one succeeded charge per confirmed order"),
        ("goods_without_money", ["ord_1"], "exactly one succeeded charge per confirmed order"),
        ("cart_writes.applied_more_than_sent", ["chk_1"], "no request applied twice"),
        ("final.chk_ok.order", "cancelled", "no confirmed order lost"),
        ("final.chk_ok.refunded", True, "no confirmed order lost"),
        ("final.chk_killed_healed.order", "failed", "no confirmed order lost"),  # charged, no goods, not refunded
        ("webhook_events", {"processed": 440, "failed": 10}, "no parked or failed webhook event"),
        ("webhook_deliveries.given_up", ["evt_1"], "every webhook accepted through the balancer"),
        ("webhook_deliveries.left", 3, "every webhook accepted through the balancer"),
        ("throttle.attacker", {401: 45}, "throttles per real client"),  # forged addresses got around the limit
        ("throttle.bystander", {429: 1}, "throttles per real client"),  # the attacker's limit hit someone else
        ("rush.rate_limited", 12, "throttles per real client"),  # buyers behind one balancer shared a limit
    ],
)
def test_each_broken_promise_fails_its_check(path, value, check):
    assert failing(_set(path, value)) == [check]


def test_a_checkout_the_server_never_heard_of_fails():
    facts = clean_facts()
    facts["told"]["chk_ghost"] = {"confirmed": True, "failed_on_server": False}
    assert failing(facts) == ["no confirmed order lost"]


def test_throttles_are_pending_until_trusted_proxies_exist():
    facts = _set("throttle.trusted_proxies_supported", False)
    facts["throttle"]["attacker"] = {401: 45}  # what a forged X-Forwarded-For gets before the setting exists
    assert statuses(facts)["throttles per real client"] == "pending"
    assert failing(facts) == ["throttles per real client"]


def test_the_balancer_retries_only_connections_that_never_reached_a_server(tmp_path):
    config = haproxy_config(port=8080, servers={"web-a": "127.0.0.1:1", "web-b": "127.0.0.1:2"}, stats_socket=tmp_path)
    assert "    retry-on conn-failure\n" in config
    assert "option forwardfor" in config
    assert "uri /readyz" in config
    assert config.count(" check\n") == 2
