"""``manage.py refund_order`` and ``cancel_order``: what they print and how they exit — 0 done, 1 refused
(nothing changed), 75 run it again (Stripe has not answered) — in-process and as real processes against the
test database and the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from orders.models import OrderOperation
from payments.models import Refund
from tests.support.saga import make_product, paid_order, stock
from tests.support.worker import ROOT, database_url_for

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def manage(emulator, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    """The command as an operator runs it: its own process, on the test database and the emulator."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for(settings.DATABASES["default"]),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CARTFLOW_DEV": "1",
        "STRIPE_API_BASE": emulator.url,
        "STRIPE_WEBHOOK_SECRET": emulator.secret,
    }
    env.pop("STRIPE_SECRET_KEY", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_refund_order_prints_what_it_refunded_and_refuses_more_than_is_left(stripe_emulator):
    client, order_id = paid_order((make_product(price=1000), 1))
    said = run("refund_order", order_id, "--amount", "400", "--reason", "dented box")
    assert said == (
        f"Refunded 4.00 USD of order {order_id} (refund #1, succeeded); refunded so far 4.00 USD of 10.00 USD "
        "(partially_refunded)."
    )
    operation = OrderOperation.objects.get()
    assert operation.reason == "dented box" and operation.actor_label.startswith("manage.py refund_order (")

    with pytest.raises(CommandError) as too_much:
        run("refund_order", order_id, "--amount", "601")
    assert too_much.value.returncode == 1 and "more than the 6.00 USD left" in str(too_much.value)
    with pytest.raises(CommandError) as unknown:
        run("refund_order", "ord_nosuchorder")
    assert unknown.value.returncode == 1 and "There is no order 'ord_nosuchorder'" in str(unknown.value)
    with pytest.raises(CommandError, match="invalid minor_units value"):
        run("refund_order", order_id, "--amount", "-5")
    assert Refund.objects.count() == 1

    said = run("refund_order", order_id)
    assert "Refunded 6.00 USD" in said and "(refunded)" in said


def test_refund_order_asks_to_be_run_again_when_stripe_does_not_answer(stripe_emulator):
    client, order_id = paid_order((make_product(price=1000), 1))
    stripe_emulator.add_fault("POST /v1/refunds", "http_500", times=3)  # stripe-python retries twice
    with pytest.raises(CommandError) as unanswered:
        run("refund_order", order_id, "--amount", "100")
    assert unanswered.value.returncode == 75 and "run the command again" in str(unanswered.value)
    stripe_emulator.clear_faults()
    said = run("refund_order", order_id, "--amount", "100")
    assert "left unfinished earlier, is now succeeded; nothing new was refunded" in said
    assert Refund.objects.count() == 1


def test_cancel_order_prints_what_it_did_and_is_safe_to_run_again(stripe_emulator):
    product = make_product(price=1000, on_hand=5)
    client, order_id = paid_order((product, 2))
    said = run("cancel_order", order_id, "--reason", "customer called")
    assert said == (
        f"Order {order_id} cancelled: refunded 20.00 USD (refund #1, succeeded); stock put back: 2 × {product.sku}."
    )
    assert stock(product) == (5, 0)
    again = run("cancel_order", order_id)
    assert again.startswith(f"Order {order_id} was cancelled already (") and again.endswith("nothing done again.")
    with pytest.raises(CommandError) as unknown:
        run("cancel_order", "ord_nosuchorder")
    assert unknown.value.returncode == 1


@pytest.mark.usefixtures("beat_schedule_as_migrated")  # a command's system checks look for the schedules
def test_the_commands_exit_0_when_done_and_1_when_refused_as_real_processes(stripe_emulator):
    product = make_product(price=1000, on_hand=5)
    client, order_id = paid_order((product, 1))

    refunded = manage(stripe_emulator, "refund_order", order_id, "--amount", "250", "--reason", "late")
    assert refunded.returncode == 0, refunded.stderr
    assert f"Refunded 2.50 USD of order {order_id}" in refunded.stdout

    refused = manage(stripe_emulator, "refund_order", order_id, "--amount", "5000")
    assert refused.returncode == 1 and "more than the 7.50 USD left" in refused.stderr

    cancelled = manage(stripe_emulator, "cancel_order", order_id, "--no-restock")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "refunded 7.50 USD (refund #2, succeeded)" in cancelled.stdout and "stock put back" not in cancelled.stdout
    assert stock(product) == (4, 0)

    not_paid = manage(stripe_emulator, "refund_order", order_id)
    assert not_paid.returncode == 1 and "only a confirmed or fulfilled order" in not_paid.stderr
