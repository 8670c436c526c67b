"""Reconciliation finds and repairs each drift kind, through the real stripe client and the emulator."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from payments.gateway import payment_intent_confirm, payment_intent_create
from payments.hooks import NotKnownYet, register_intent_listener, unregister_intent_listener
from payments.models import Payment, Refund
from payments.reconciliation import payments_reconcile
from payments.refunds import refund_reserve
from payments.selectors import payment_get
from payments.services import payment_mark_order_cancelled

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _only_this_tests_listeners():
    """The orders app registers its saga listener; these tests are about payments alone (its own tests cover
    the saga), so each test starts with no listener and registers its own."""
    from payments import hooks

    saved = list(hooks._LISTENERS)
    hooks._LISTENERS.clear()
    yield
    hooks._LISTENERS[:] = saved


def _intent(order_id: str, *, pay: bool = False) -> str:
    intent = payment_intent_create(order_id=order_id, checkout_id=f"chk_{order_id}", amount=2000, currency="usd")
    if pay:
        payment_intent_confirm(order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=1)
    return intent.intent_id


@pytest.fixture
def told():
    calls: list[tuple[str, str, str]] = []

    def listener(intent, source):
        calls.append((intent.order_id, intent.status, source))

    register_intent_listener(listener)
    yield calls
    unregister_intent_listener(listener)


def test_nothing_to_do_when_payments_and_stripe_agree(stripe_emulator, told):
    _intent("ord_a", pay=True)
    _intent("ord_b")
    report = payments_reconcile()
    assert (report.checked, report.rows, report.needs_human) == (2, [], False)
    assert told == []


def test_succeeded_in_stripe_but_not_here_is_synced_and_the_order_told(stripe_emulator, told):
    intent_id = _intent("ord_lost")
    # The confirm happened in Stripe, but its response (and webhook) never reached us.
    stripe_emulator.client().v1.payment_intents.confirm(intent_id, params={"payment_method": "pm_card_visa"})
    report = payments_reconcile()
    [row] = report.rows
    assert (row.order_id, row.here, row.stripe, row.drift) == (
        "ord_lost",
        "requires_payment_method",
        "succeeded",
        ["succeeded_in_stripe_only"],
    )
    assert not report.needs_human
    assert payment_get(order_id="ord_lost").status == "succeeded"
    assert told == [("ord_lost", "succeeded", "reconcile")]
    assert payments_reconcile().rows == []  # repaired: a second run finds nothing


def test_succeeded_here_but_not_in_stripe_is_synced_back(stripe_emulator, told):
    _intent("ord_wrong")
    Payment.objects.filter(order_id="ord_wrong").update(status="succeeded")
    [row] = payments_reconcile().rows
    assert row.drift == ["succeeded_here_only"] and row.stripe == "requires_payment_method"
    assert payment_get(order_id="ord_wrong").status == "requires_payment_method"
    assert told == [("ord_wrong", "requires_payment_method", "reconcile")]


def test_a_charge_on_a_cancelled_order_is_refunded_once(stripe_emulator):
    intent_id = _intent("ord_cancelled", pay=True)
    payment_mark_order_cancelled(order_id="ord_cancelled")
    report = payments_reconcile()
    [row] = report.rows
    assert row.drift == ["charge_on_cancelled_order"] and not row.needs_human
    assert payment_get(order_id="ord_cancelled").amount_refunded == 2000
    assert (
        stripe_emulator.client()
        .v1.payment_intents.retrieve(intent_id, params={"expand": ["latest_charge"]})
        .latest_charge.refunded
    )
    assert payments_reconcile().rows == []
    assert stripe_emulator.control("GET", "/_emulator/health")["refunds"] == 1


def test_an_open_intent_on_a_cancelled_order_is_cancelled(stripe_emulator):
    _intent("ord_open")
    payment_mark_order_cancelled(order_id="ord_open")
    [row] = payments_reconcile().rows
    assert row.drift == ["open_intent_on_cancelled_order"]
    assert payment_get(order_id="ord_open").status == "canceled"


def test_an_authorization_missed_here_is_synced_and_the_order_told(stripe_emulator, settings, told):
    settings.CARTFLOW_CAPTURE_METHOD = "manual"
    intent_id = _intent("ord_authorized")
    # Stripe.js authorized it (manual capture); neither the answer nor the webhook reached us.
    stripe_emulator.client().v1.payment_intents.confirm(intent_id, params={"payment_method": "pm_card_visa"})
    report = payments_reconcile()
    [row] = report.rows
    assert (row.here, row.stripe, row.drift, report.needs_human) == (
        "requires_payment_method", "requires_capture", ["authorized_in_stripe_only"], False,
    )  # fmt: skip
    assert payment_get(order_id="ord_authorized").status == "requires_capture"
    assert told == [("ord_authorized", "requires_capture", "reconcile")]
    assert payments_reconcile().rows == []


def test_an_authorization_lost_at_stripe_needs_a_human_unless_the_order_was_cancelled(stripe_emulator, settings):
    settings.CARTFLOW_CAPTURE_METHOD = "manual"
    for order_id in ("ord_live", "ord_dead"):
        _intent(order_id, pay=True)
        assert payment_get(order_id=order_id).status == "requires_capture"
    payment_mark_order_cancelled(order_id="ord_dead")
    stripe_emulator.advance_clock(7 * 24 * 3600 + 60)  # Stripe cancelled both: nobody captured them in time
    report = payments_reconcile()
    rows = {row.order_id: row for row in report.rows}
    assert rows["ord_live"].drift == ["authorization_lost"] and rows["ord_live"].needs_human
    assert rows["ord_dead"].drift == ["authorization_lost"] and not rows["ord_dead"].needs_human
    assert {payment_get(order_id=o).status for o in rows} == {"canceled"}


def test_an_authorization_on_a_cancelled_order_is_voided_not_refunded(stripe_emulator, settings):
    settings.CARTFLOW_CAPTURE_METHOD = "manual"
    intent_id = _intent("ord_void", pay=True)
    payment_mark_order_cancelled(order_id="ord_void")
    [row] = payments_reconcile().rows
    assert row.drift == ["authorization_on_cancelled_order"] and row.actions == ["voided authorization (canceled)"]
    payment = payment_get(order_id="ord_void")
    assert (payment.status, payment.amount_refunded) == ("canceled", 0)
    assert stripe_emulator.client().v1.payment_intents.retrieve(intent_id).status == "canceled"
    assert stripe_emulator.control("GET", "/_emulator/health")["refunds"] == 0


def test_a_refund_made_in_the_dashboard_is_picked_up(stripe_emulator):
    intent_id = _intent("ord_dash", pay=True)
    stripe_emulator.client().v1.refunds.create(params={"payment_intent": intent_id, "amount": 500})
    [row] = payments_reconcile().rows
    assert row.drift == ["refund_drift"]
    assert payment_get(order_id="ord_dash").amount_refunded == 500


def test_a_refund_made_in_the_dashboard_tells_the_listeners(stripe_emulator, told):
    intent_id = _intent("ord_dash_told", pay=True)
    stripe_emulator.client().v1.refunds.create(params={"payment_intent": intent_id, "amount": 500})
    payments_reconcile()
    assert told == [("ord_dash_told", "succeeded", "reconcile")]  # so the order's refunded amount follows


def test_a_numbered_refund_stripe_never_answered_is_asked_again_with_its_own_key(stripe_emulator):
    """A process reserved refund #1 and died (or lost Stripe's answer): an hour later the reconciliation asks
    again with ``cf:<order>:refund:1``; a fresh one (a call may still be waiting) is left alone."""
    intent_id = _intent("ord_unanswered", pay=True)
    refund = refund_reserve(order_id="ord_unanswered", amount=700)
    assert payments_reconcile().rows == []  # just reserved: a live call may be on its way
    Refund.objects.filter(pk=refund.pk).update(created=timezone.now() - timedelta(minutes=5))
    [row] = payments_reconcile().rows
    assert row.drift[0] == "refund_unfinished" and row.actions[0] == "refund #1 asked again: succeeded"
    refund.refresh_from_db()
    assert refund.status == "succeeded" and refund.idempotency_key == "cf:ord_unanswered:refund:1"
    [made] = stripe_emulator.client().v1.refunds.list(params={"payment_intent": intent_id}).data
    assert (made.id, made.amount) == (refund.stripe_refund_id, 700)
    assert payment_get(order_id="ord_unanswered").amount_refunded == 700
    assert payments_reconcile().rows == []


def test_a_dispute_needs_a_human(stripe_emulator):
    _intent("ord_disputed", pay=True)
    Payment.objects.filter(order_id="ord_disputed").update(disputed=True)
    report = payments_reconcile()
    [row] = report.rows
    assert row.drift == ["dispute"] and report.needs_human


def test_a_failed_refund_needs_a_human(stripe_emulator, settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    _intent("ord_refund_fails", pay=True)
    payment_mark_order_cancelled(order_id="ord_refund_fails")
    stripe_emulator.add_fault("POST /v1/refunds", "http_500", times=1)
    report = payments_reconcile()
    [row] = report.rows
    assert row.needs_human and "repair failed" in "; ".join(row.actions)
    assert payment_get(order_id="ord_refund_fails").amount_refunded == 0
    assert not payments_reconcile().needs_human  # the next run refunds it


def test_an_order_that_cannot_take_the_news_needs_a_human(stripe_emulator):
    intent_id = _intent("ord_gone")
    stripe_emulator.client().v1.payment_intents.confirm(intent_id, params={"payment_method": "pm_card_visa"})

    def missing(intent, source):
        raise NotKnownYet("no such order")

    register_intent_listener(missing)
    try:
        report = payments_reconcile()
    finally:
        unregister_intent_listener(missing)
    assert report.needs_human and "NotKnownYet" in report.rows[0].actions[-1]


def test_since_limits_the_payments_checked(stripe_emulator):
    _intent("ord_old")
    _intent("ord_new")
    Payment.objects.filter(order_id="ord_old").update(updated=timezone.now() - timedelta(days=3))
    assert payments_reconcile(since=timezone.now() - timedelta(hours=1)).checked == 1


def test_the_command_prints_a_table_and_exits_non_zero_when_a_human_is_needed(stripe_emulator):
    intent_id = _intent("ord_cmd")
    stripe_emulator.client().v1.payment_intents.confirm(intent_id, params={"payment_method": "pm_card_visa"})
    out = io.StringIO()
    call_command("reconcile_payments", "--since", "2000-01-01", stdout=out)
    text = out.getvalue()
    assert "ord_cmd" in text and "succeeded_in_stripe_only" in text and "drift repaired" in text

    Payment.objects.filter(order_id="ord_cmd").update(disputed=True)
    out = io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("reconcile_payments", stdout=out)
    assert excinfo.value.returncode == 1
    assert "dispute" in out.getvalue() and "YES" in out.getvalue()

    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("reconcile_payments", "--since", "yesterday")


def test_the_hourly_schedule_exists():
    from django.core.management import call_command as run
    from django_celery_beat.models import PeriodicTask

    # transaction=True tests flush tables; re-apply the data migration the way a deploy does.
    run("migrate", "payments", "0001", verbosity=0)
    run("migrate", "payments", verbosity=0)
    task = PeriodicTask.objects.get(task="payments.tasks.reconcile_payments_task")
    assert task.enabled and (task.interval.every, task.interval.period) == (1, "hours")


def test_the_beat_task_reconciles_the_last_hours(stripe_emulator):
    from payments.tasks import reconcile_payments_task

    intent_id = _intent("ord_beat")
    stripe_emulator.client().v1.payment_intents.confirm(intent_id, params={"payment_method": "pm_card_visa"})
    summary = reconcile_payments_task.apply().get()
    assert summary == {"checked": 1, "drifted": 1, "needs_human": 0, "kinds": {"succeeded_in_stripe_only": 1}}
    assert payment_get(order_id="ord_beat").status == "succeeded"
