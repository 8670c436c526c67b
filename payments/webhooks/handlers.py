"""Webhook handlers: apply one stored Stripe event, routed by its type through :data:`HANDLERS`.

The task (payments/tasks.py) calls :func:`webhook_event_process` for each event intake stored
(payments/webhooks/intake.py). A handler never trusts the payload: it re-fetches the PaymentIntent (and a
refund, the refund) from Stripe, syncs the Payment row (and our Refund row, payments/refunds.py) and tells
the listeners (payments/hooks.py). Unknown types are ``ignored``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog
from django.db.models import F
from django.utils import timezone

from payments import budget as stripe_budget
from payments.errors import PaymentProviderBusy, PaymentTransientError, RefundFailed
from payments.gateway import payment_intent_retrieve, refund_retrieve
from payments.hooks import NotKnownYet, intent_listeners_notify, intent_listeners_settled
from payments.interface import IntentResult
from payments.metrics import webhook_processed
from payments.models import Payment, WebhookEvent
from payments.refunds import refund_execute, refund_sync, refunds_unfinished
from payments.services import payment_sync_from_intent

log = structlog.get_logger("cartflow.payments.webhooks")


def event_intent_id(event: dict[str, Any]) -> str:
    """The PaymentIntent an event is about: its object, or the one its charge or dispute names ("" if none)."""
    obj = event["data"]["object"]
    if obj.get("object") == "payment_intent":
        return obj.get("id") or ""
    pi = obj.get("payment_intent")
    if isinstance(pi, dict):
        return pi.get("id") or ""
    return pi or ""


# --- handlers: a table from event type to what to do ---


# The events that announce a status CartFlow may have recorded and acted on already, and that status.
_ANNOUNCES = {"payment_intent.succeeded": "succeeded", "payment_intent.amount_capturable_updated": "requires_capture"}


def _already_reflected(event: dict[str, Any], intent_id: str) -> bool:
    """A ``payment_intent.succeeded`` (or, with manual capture, ``amount_capturable_updated``) whose news
    CartFlow has recorded and acted on already.

    The event is signed, so when our Payment row says the status it announces and every listener (the
    checkout) says it is settled at that status, re-fetching the intent from Stripe and notifying would change
    nothing. ``succeeded`` is a PaymentIntent's last status (refunds and disputes arrive as ``charge.*``
    events, which are always re-fetched); an authorization whose row says ``succeeded`` was captured since,
    and the capture's own event follows. The synchronous confirm usually gets there before the webhook: this
    saves a Stripe read per order (Stripe rate-limits reads) and the worker's lease round trips."""
    status = _ANNOUNCES.get(event["type"])
    if status is None or event["data"]["object"].get("status") != status:
        return False
    recorded = Payment.objects.filter(intent_id=intent_id).values_list("status", flat=True).first()
    return recorded in (status, "succeeded") and intent_listeners_settled(intent_id=intent_id, status=recorded)


def _sync_and_notify(event: dict[str, Any], *, dispute: bool = False, force: bool = False) -> None:
    """Re-fetch the PaymentIntent, sync the Payment row, tell the listeners. ``force``: the refunded amount
    may have gone down (a refund failed), so the row takes Stripe's figure as it is."""
    intent_id = event_intent_id(event)
    if not intent_id:
        raise LookupError(f"{event['type']} carries no PaymentIntent")
    if not dispute and _already_reflected(event, intent_id):
        log.info("webhook_already_reflected", event_id=event["id"], intent_id=intent_id)
        return
    intent = payment_intent_retrieve(intent_id=intent_id)  # re-fetch: never trust the payload
    if dispute:
        intent = _with_dispute(intent)
    payment = payment_sync_from_intent(intent=intent, force=force)
    if dispute and not payment.disputed:
        Payment.objects.filter(pk=payment.pk).update(disputed=True, updated=timezone.now())
    intent_listeners_notify(intent=intent, source="webhook")


def _with_dispute(intent: IntentResult) -> IntentResult:
    # The event is signed, so a dispute was opened; the flag stays for staff until they act in Stripe.
    return replace(intent, disputed=True)


def _charge_refunded(event: dict[str, Any]) -> None:
    """A refund landed on the charge. A numbered refund of ours whose answer was lost (still ``requested``)
    is asked for again with its own key, so Stripe tells which refund it is; then the usual sync."""
    payment = Payment.objects.filter(intent_id=event_intent_id(event)).first()
    for refund in refunds_unfinished(order_id=payment.order_id) if payment is not None else []:
        try:
            refund_execute(refund_id=refund.pk)
        except RefundFailed:
            pass  # settled as failed, its amount free again; the charge's refunds are synced below
    _sync_and_notify(event)


def _refund_updated(event: dict[str, Any]) -> None:
    """A refund changed at Stripe (pending → succeeded, or failed days later): re-fetch it, move our row,
    then sync the payment with Stripe's refunded amount as it is, which a failure lowers."""
    refund_sync(result=refund_retrieve(refund_id=event["data"]["object"]["id"]))
    _sync_and_notify(event, force=True)


HANDLERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "payment_intent.succeeded": _sync_and_notify,
    "payment_intent.amount_capturable_updated": _sync_and_notify,  # authorized (manual capture)
    "payment_intent.payment_failed": _sync_and_notify,
    "payment_intent.canceled": _sync_and_notify,
    "payment_intent.requires_action": _sync_and_notify,
    "charge.refunded": _charge_refunded,
    "refund.updated": _refund_updated,
    "charge.dispute.created": lambda event: _sync_and_notify(event, dispute=True),
}
# The event types CartFlow acts on, defined by the table above: `make run`, the bench stack and the e2e
# fixtures tell the emulator (``--enabled-events``) to deliver only these, like the enabled_events of a real
# Stripe webhook endpoint; `manage.py stripe_webhook_events` prints them for scripts.
HANDLED_EVENT_TYPES: tuple[str, ...] = tuple(HANDLERS)
# The shared Stripe budget being spent (nothing was sent) is as retryable as Stripe being away.
RETRYABLE = (PaymentTransientError, PaymentProviderBusy, NotKnownYet)


def _set_status(event_id: str, status: str, error: str = "") -> None:
    done = status in (WebhookEvent.PROCESSED, WebhookEvent.IGNORED)
    WebhookEvent.objects.filter(event_id=event_id).update(
        status=status, last_error=error[:4000], processed_at=timezone.now() if done else None
    )
    webhook_processed(status)


# Background priority: its Stripe re-fetches yield to buyers' calls in the shared budget (payments/budget.py).
@stripe_budget.background()
def webhook_event_process(*, event_id: str, force: bool = False) -> WebhookEvent:
    """Apply one stored event. Already processed/ignored → nothing (unless ``force``).

    Retryable failures (Stripe unavailable, listener says NotKnownYet) keep the event ``received`` with the
    error and re-raise for the caller to retry; anything else marks it ``failed`` and re-raises.
    """
    stored = WebhookEvent.objects.get(event_id=event_id)
    if stored.status in (WebhookEvent.PROCESSED, WebhookEvent.IGNORED) and not force:
        return stored
    WebhookEvent.objects.filter(pk=stored.pk).update(attempts=F("attempts") + 1)
    event = json.loads(stored.payload)
    handler = HANDLERS.get(stored.type)
    if handler is None:
        _set_status(event_id, WebhookEvent.IGNORED)
    else:
        try:
            handler(event)
        except RETRYABLE as exc:
            _set_status(event_id, WebhookEvent.RECEIVED, f"{exc.__class__.__name__}: {exc}")
            raise
        except LookupError as exc:  # not one of CartFlow's PaymentIntents
            log.warning("webhook_event_ignored", event_id=event_id, reason=str(exc))
            _set_status(event_id, WebhookEvent.IGNORED, str(exc))
        except Exception as exc:
            log.error("webhook_event_failed", event_id=event_id, exc_info=exc)
            _set_status(event_id, WebhookEvent.FAILED, f"{exc.__class__.__name__}: {exc}")
            raise
        else:
            _set_status(event_id, WebhookEvent.PROCESSED)
    stored.refresh_from_db()
    return stored


def webhook_event_park(*, event_id: str, error: str) -> None:
    """Retries are exhausted: leave the event for staff (admin re-processes it through the same service)."""
    log.error("webhook_event_parked", event_id=event_id, error=error)
    _set_status(event_id, WebhookEvent.PARKED, error)
