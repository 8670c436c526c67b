"""The fault campaign's verdict (bench/chaos.py ``verdict``): every check can fail.

The campaign itself (`make chaos`) takes minutes and runs its own stack, so it is not part of the suite; its
verdict is a pure function of the facts it collects, and here each check is given facts that must fail it
(and only it), starting from the facts of a clean run.
"""

from __future__ import annotations

import copy
import signal

import pytest

from bench.chaos import verdict

MIN_PROGRESS = 200


def clean_facts() -> dict:
    return {
        "fault_window": {"start": 1.0, "end": 85.0, "confirmed": 900},
        "stripe_faults_fired": {"http_500": 310, "lose_response": 61},
        "web_kill": {"victim": 101, "before": [101, 102], "existed": True, "gone": True, "replacement": 103,
                     "replacement_alive": True},
        "celery_kill": {"victim": 201, "existed": True, "exit": -signal.SIGKILL, "gone": True, "replacement": 202,
                        "replacement_alive": True, "replacement_pong": True},
        "pg": {"before": {"pid": 301, "started": "2026-12-01 20:00:00+00", "fsync": "on"},
               "after": {"pid": 302, "started": "2026-12-01 20:00:33+00", "fsync": "on"}},
        "redis": {"pid": 401, "exit": -signal.SIGKILL, "unreachable": True, "run_id_before": "a" * 40,
                  "run_id_after": "b" * 40},
        "durability": {"pg_fsync": "on", "redis_appendonly": "yes"},
        "non_terminal": 0,
        "healed_after_s": 30.0,
        "sagas": {"fulfilled": 2},
        "check_invariants": "clean",
        "reconcile_payments": "no drift",
        "oversold": {},
        "orders_with_several_intents": [],
        "double_charges": [],
        "money_without_goods": [],
        "goods_without_money": [],
        "webhook_events": {"processed": 900, "ignored": 3},
        "told": {
            "chk_ok": {"confirmed": True, "failed_on_server": False},
            "chk_5xx_healed": {"confirmed": False, "failed_on_server": True},
            "chk_5xx_refunded": {"confirmed": False, "failed_on_server": True},
        },
        "final": {
            "chk_ok": {"order": "fulfilled", "charged": True, "refunded": False},
            # a 5xx whose order went on to be fulfilled, and one whose charge was given back: both honest
            "chk_5xx_healed": {"order": "fulfilled", "charged": True, "refunded": False},
            "chk_5xx_refunded": {"order": "cancelled", "charged": True, "refunded": True},
        },
    }  # fmt: skip


def failing(facts: dict) -> list[str]:
    return [c.name for c in verdict(facts, min_progress=MIN_PROGRESS) if not c.ok]


def test_clean_facts_pass_every_check_and_print_figures():
    checks = verdict(clean_facts(), min_progress=MIN_PROGRESS)
    assert [c.name for c in checks if not c.ok] == []
    figures = {c.name: c.figure for c in checks}
    assert "900 checkouts confirmed" in figures["progress under faults"]
    assert "http_500 fired 310×" in figures["Stripe faults fired"]
    assert "victim PID 101" in figures["gunicorn worker killed"]


def _set(path: str, value):  # noqa: ANN202
    def mutate(facts: dict) -> None:
        *parents, leaf = path.split(".")
        node = facts
        for key in parents:
            node = node[key]
        node[leaf] = value

    return mutate


def _drop(key: str):  # noqa: ANN202
    return lambda facts: facts.pop(key)


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (_set("fault_window.confirmed", MIN_PROGRESS - 1), "progress under faults"),
        (_drop("fault_window"), "progress under faults"),
        (_set("stripe_faults_fired.http_500", 0), "Stripe faults fired"),
        (_set("stripe_faults_fired", {"http_500": 5}), "Stripe faults fired"),
        (_set("web_kill", {"victim": None}), "gunicorn worker killed"),
        (_set("web_kill.existed", False), "gunicorn worker killed"),
        (_set("web_kill.gone", False), "gunicorn worker killed"),
        (_set("web_kill.replacement", None), "gunicorn worker killed"),
        (_set("web_kill.replacement", 101), "gunicorn worker killed"),
        (_set("celery_kill.gone", False), "Celery worker killed"),
        (_set("celery_kill.replacement_alive", False), "Celery worker killed"),
        (_set("celery_kill.replacement_pong", False), "Celery worker killed"),
        (lambda facts: facts["celery_kill"].pop("replacement_pong"), "Celery worker killed"),
        (_set("pg.after", {"pid": 301, "started": "2026-12-01 20:00:00+00"}), "PostgreSQL crashed and restarted"),
        (_drop("pg"), "PostgreSQL crashed and restarted"),
        (_set("redis.exit", 0), "Redis killed with SIGKILL and restarted"),
        (_set("redis.exit", -signal.SIGTERM), "Redis killed with SIGKILL and restarted"),
        (_set("redis.unreachable", False), "Redis killed with SIGKILL and restarted"),
        (_set("redis.run_id_after", "a" * 40), "Redis killed with SIGKILL and restarted"),
        (_set("durability.pg_fsync", "off"), "durability settings in force"),
        (_set("durability.redis_appendonly", "no"), "durability settings in force"),
        (_set("non_terminal", 3), "sagas terminal without a human"),
        (_set("check_invariants", "stock row 7: reserved > on_hand"), "check_invariants"),
        (_set("reconcile_payments", "1 drift"), "reconcile_payments"),
        (_set("oversold", {7: {"sold": 26, "on_hand": 0}}), "no oversold units"),
        (_set("orders_with_several_intents", ["ord_1"]), "one PaymentIntent per order"),
        (_set("double_charges", ["ord_1"]), "no double charge"),
        (_set("money_without_goods", ["ord_1"]), "no money without goods"),
        (_set("goods_without_money", ["ord_1"]), "no goods without money"),
        (_drop("money_without_goods"), "no money without goods"),
        (_set("webhook_events.parked", 1), "no parked or failed webhook event"),
        (_set("webhook_events.failed", 1), "no parked or failed webhook event"),
        (_drop("webhook_events"), "no parked or failed webhook event"),
        # told confirmed, ended refunded or cancelled
        (_set("final.chk_ok", {"order": "cancelled", "charged": True, "refunded": True}), "buyers told the truth"),
        (_set("final.chk_ok", {"order": "fulfilled", "charged": True, "refunded": True}), "buyers told the truth"),
        # told 5xx, charged, not refunded, not fulfilled
        (_set("final.chk_5xx_healed", {"order": "confirmed", "charged": True, "refunded": False}),
         "buyers told the truth"),
        (_set("final.chk_5xx_healed", {"order": "cancelled", "charged": True, "refunded": False}),
         "buyers told the truth"),
        (_drop("told"), "buyers told the truth"),
        (lambda facts: facts["final"].pop("chk_ok"), "buyers told the truth"),
    ],
)  # fmt: skip
def test_each_check_fails_on_the_facts_it_guards(mutate, check):
    facts = copy.deepcopy(clean_facts())
    mutate(facts)
    assert failing(facts) == [check]
