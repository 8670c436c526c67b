"""Authorize now, capture at fulfilment, with REAL Celery workers where the outbox consumer runs.

The test process confirms (``CARTFLOW_CAPTURE_METHOD=manual``: the PaymentIntent only authorizes) and the
confirm's outbox event goes through the broker to a worker, which captures and fulfils. The worker needs no
setting of its own: what it captures is decided by the order's recorded payment status. In the second test
the worker is SIGKILLed after Stripe captured and before "capture done" was saved; the outbox is swept to
another worker, which replays the capture under the order's key: one capture, and the order fulfilled.
"""

from __future__ import annotations

import os
import signal

import pytest
from django.utils import timezone

from cart.identity import cart_ref_for_token
from orders.models import CheckoutSaga
from orders.saga.driver import checkout_confirm, checkout_start
from orders.services import outbox_sweep
from payments.models import Payment
from tests.support.polling import poll_until
from tests.support.saga import guest_with_cart, invariants_hold, make_product, stock
from tests.support.worker import purge_broker, start_worker, stop_process, task_queue, worker_consuming

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(autouse=True)
def manual(settings):
    settings.CARTFLOW_CAPTURE_METHOD = "manual"


def _confirmed(product) -> CheckoutSaga:  # noqa: ANN001
    """A checkout confirmed in this process (authorized at Stripe); its outbox event is in the broker."""
    client = guest_with_cart((product, 2))
    saga, _ = checkout_start(cart_key=cart_ref_for_token(client._credentials["HTTP_X_CART_TOKEN"]).key)
    assert checkout_confirm(saga_id=saga.pk, payment_method="pm_card_visa").state == "confirmed"
    return CheckoutSaga.objects.select_related("order").get(pk=saga.pk)


def _at_stripe(emulator, saga: CheckoutSaga) -> tuple[str, int, int]:  # noqa: ANN001
    state = emulator.server.state
    with state.lock:
        pi = state.payment_intents[saga.payment_intent_id]
        return pi["status"], pi["amount_received"], pi["amount_capturable"]


def _lease_lapsed(saga: CheckoutSaga) -> bool:
    return CheckoutSaga.objects.get(pk=saga.pk).lease_expires_at < timezone.now()


def _state(saga: CheckoutSaga) -> str:
    return CheckoutSaga.objects.values_list("state", flat=True).get(pk=saga.pk)


def test_the_outbox_worker_captures_then_fulfils(stripe_emulator, celery_worker_process):
    product = make_product(price=1250, on_hand=5)
    saga = _confirmed(product)
    celery_worker_process.wait_for(lambda: _state(saga) == "fulfilled", timeout=30)
    assert _at_stripe(stripe_emulator, saga) == ("succeeded", 2500, 0)
    assert len(stripe_emulator.events("charge.captured")) == 1
    assert Payment.objects.get(order_id=saga.order.public_id).status == "succeeded"
    assert stock(product) == (3, 0)
    invariants_hold()


def test_a_worker_killed_between_the_capture_and_its_record_is_finished_with_one_capture(
    stripe_emulator, settings, celery_worker_session, tmp_path
):
    pause_file = tmp_path / "paused"
    env = {
        **celery_worker_session.env,
        "CARTFLOW_TEST_PAUSE_AT": "capture:after",  # orders/saga/crashpoints.py: block there until killed
        "CARTFLOW_TEST_PAUSE_FILE": str(pause_file),
        "CARTFLOW_SAGA_LEASE_SECONDS": "1",  # the dead worker's lease lapses a second after its last save
    }
    product = make_product(on_hand=5)
    purge_broker(settings.CELERY_BROKER_URL)
    doomed = start_worker(env, hostname=f"pytest-doomed-{os.getpid()}@cartflow-tests", queue=task_queue())
    try:
        saga = _confirmed(product)
        text = doomed.wait_for(
            lambda: pause_file.exists() and pause_file.read_text().endswith("\n") and pause_file.read_text()
        )
        pid = int(text.split()[0])
        assert pid == doomed.proc.pid  # the thread pool's process: the whole worker dies
        # Stripe captured; the saga still says "about to capture".
        assert _at_stripe(stripe_emulator, saga) == ("succeeded", 2500, 0)
        paused = CheckoutSaga.objects.get(pk=saga.pk)
        assert (paused.state, paused.step, paused.step_status) == ("confirmed", "capture", "about_to")
        os.kill(pid, signal.SIGKILL)
        doomed.proc.wait(timeout=20)
    finally:
        stop_process(doomed.proc)
    poll_until(lambda: _lease_lapsed(saga), timeout=10, what="the dead worker's lease lapsed")

    # Its message died with it; the outbox sweep hands the event to another worker.
    with worker_consuming(celery_worker_session, settings.CELERY_BROKER_URL) as worker:
        assert outbox_sweep(older_than_seconds=0) == 1
        worker.wait_for(lambda: _state(saga) == "fulfilled", timeout=30)
    assert _at_stripe(stripe_emulator, saga) == ("succeeded", 2500, 0)
    assert len(stripe_emulator.events("charge.captured")) == 1
    assert len(stripe_emulator.events("payment_intent.succeeded")) == 1
    steps = list(CheckoutSaga.objects.get(pk=saga.pk).log.values_list("step", "outcome"))
    assert steps.count(("capture", "about_to")) == 2 and steps.count(("capture", "done")) == 1
    assert stock(product) == (3, 0)
    invariants_hold()
