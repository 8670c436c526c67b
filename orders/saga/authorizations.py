"""Authorizations that fulfilment did not capture in time (``CARTFLOW_CAPTURE_METHOD=manual``).

Stripe cancels a card authorization left uncaptured for seven days. Fulfilment captures seconds after the
confirm (orders/saga/driver.py ``saga_fulfil``), so one is still uncaptured days later only when fulfilment
has not run (the outbox consumer failing, Stripe away for long), or when it sits on a checkout that ended
without voiding it. The hourly beat task ``orders: settle due authorizations`` (orders/tasks.py) runs
:func:`authorizations_settle`, and every authorization older than ``CARTFLOW_CAPTURE_WITHIN_HOURS`` (144 h, a
day before Stripe's seven) is

- **captured** when its order goes on (the checkout is paid, confirmed or fulfilled): the money the buyer
  agreed to pay is kept, and the order's fulfilment hands it on once it runs;
- **voided** when its checkout ended (failed, expired, cancelled): a dead order keeps no money.

A checkout still awaiting payment, in 3-D Secure or compensating is recovery's (``saga_recover``), which
settles it from Stripe first; it is left alone here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from orders.errors import CheckoutInProgress
from orders.models import CheckoutSaga
from orders.saga import payment_steps
from orders.saga.driver import confirm
from orders.saga.intent_outcome import IntentOutcome, intent_outcome
from orders.saga.lease import driving
from payments.selectors import authorizations_made_before

log = structlog.get_logger("cartflow.checkout")
S = CheckoutSaga.State


def authorizations_due(*, now: datetime | None = None, limit: int = 200) -> list[int]:
    """The sagas (pks, oldest first) whose order holds an authorization older than the capture window: as
    the Payment row has it (synced from Stripe by every call, webhook and reconciliation), or as the order
    recorded it at the confirm. Both are no later than the authorization itself, so the age errs early."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.CARTFLOW_CAPTURE_WITHIN_HOURS)
    held_at_stripe = authorizations_made_before(before=cutoff).values("order_id")
    recorded = Q(order__payment_status="requires_capture", order__created_at__lt=cutoff)
    return list(
        CheckoutSaga.objects.filter(Q(order__public_id__in=held_at_stripe) | recorded)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def saga_settle_authorization(*, saga_id: int) -> str:
    """Capture or void one due authorization. Returns what happened: ``captured``, ``refused`` (Stripe would
    not capture: the saga waits for staff), ``voided``, or ``left`` (recovery's, or nothing to act on)."""
    with driving(saga_id, wait=2.0) as saga:
        if saga.state == S.PAID and not saga.compensate_to:
            confirm(saga)  # paid but not confirmed yet: take the stock first (or, if it is gone, void)
        if saga.state in (S.CONFIRMED, S.FULFILLED):
            payment_steps.capture(saga)
            return "refused" if payment_steps.capture_refused(saga) else "captured"
        if saga.is_terminal and saga.payment_intent_id:
            intent = payment_steps.cancel_payment_intent(saga)
            if intent is not None and intent_outcome(intent) is IntentOutcome.CANCELED:
                return "voided"
        return "left"


def authorizations_settle(*, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
    """The beat task's body: settle every due authorization; one failing does not stop the others."""
    counts = {"captured": 0, "refused": 0, "voided": 0, "left": 0, "busy": 0, "errors": 0}
    for pk in authorizations_due(now=now, limit=limit):
        try:
            counts[saga_settle_authorization(saga_id=pk)] += 1
        except CheckoutInProgress:
            counts["busy"] += 1  # a live process drives it; the next run looks again
        except Exception:  # noqa: BLE001 - Stripe or Redis away: the next run tries again
            log.exception("authorization_settle_failed", saga_pk=pk)
            counts["errors"] += 1
    if any(counts.values()):
        log.info("authorizations_settled", **counts)
    return counts
