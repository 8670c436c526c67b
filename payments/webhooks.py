"""Stripe webhooks: verify and store once (intake), then process in a Celery task (handlers).

Intake never trusts an unsigned body and stores nothing it could not verify. Handlers never trust the
event's payload either: each re-fetches the PaymentIntent from Stripe, syncs the Payment row from it and
tells the listeners (payments/hooks.py). Replaying any event, any number of times, in any order, converges
on Stripe's current state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import stripe
import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from cartflow.problems import DomainError
from payments import budget as stripe_budget
from payments.gateway import IntentResult, PaymentProviderBusy, PaymentTransientError, payment_intent_retrieve
from payments.hooks import NotKnownYet, intent_listeners_notify, intent_listeners_settled
from payments.models import Payment, WebhookEvent
from payments.services import payment_sync_from_intent

log = structlog.get_logger("cartflow.payments.webhooks")


# --- intake ---


def _secrets() -> list[str]:
    return [s.strip() for s in settings.STRIPE_WEBHOOK_SECRET.split(",") if s.strip()]


def webhook_verify(*, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event as a dict, if ``signature`` matches one of the configured secrets within the tolerance.

    Raises DomainError ``webhook_signature_invalid`` or ``malformed_event``.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise DomainError("The body is not UTF-8 text.", code="malformed_event") from None
    if not signature:
        raise DomainError("The Stripe-Signature header is missing.", code="webhook_signature_invalid")
    for secret in _secrets():  # several during a rotation
        try:
            event = stripe.Webhook.construct_event(text, signature, secret, settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError:
            continue
        except Exception:  # signed, but not JSON or not an object
            raise DomainError("The body is not a Stripe event.", code="malformed_event") from None
        break
    else:
        raise DomainError(
            "The Stripe-Signature header does not match the body, or its timestamp is too old.",
            code="webhook_signature_invalid",
        )
    data = event.to_dict()
    if data.get("object") != "event" or not data.get("id") or not data.get("type"):
        raise DomainError("The body is not a Stripe event.", code="malformed_event")
    if not isinstance((data.get("data") or {}).get("object"), dict):
        raise DomainError("The event carries no data.object.", code="malformed_event")
    return data


def _intent_id_in(event: dict[str, Any]) -> str:
    obj = event["data"]["object"]
    if obj.get("object") == "payment_intent":
        return obj.get("id") or ""
    pi = obj.get("payment_intent")
    if isinstance(pi, dict):
        return pi.get("id") or ""
    return pi or ""


def webhook_event_receive(*, payload: bytes, signature: str | None) -> WebhookEvent:
    """Verify, store once by event id, and enqueue processing after commit. Duplicates change nothing."""
    event = webhook_verify(payload=payload, signature=signature)
    from payments.tasks import process_webhook_event

    with transaction.atomic():
        stored, created = WebhookEvent.objects.get_or_create(
            event_id=event["id"],
            defaults={
                "type": event["type"],
                "payload": payload.decode("utf-8"),
                "intent_id": _intent_id_in(event),
            },
        )
        if created or stored.status in (WebhookEvent.RECEIVED, WebhookEvent.PARKED):
            # A redelivery of an event still pending (or parked) is a good moment to try it again.
            event_id = stored.event_id
            transaction.on_commit(lambda: process_webhook_event.delay(event_id))
    log.info("webhook_received", event_id=stored.event_id, type=stored.type, duplicate=not created)
    return stored


# --- handlers: a table from event type to what to do ---


def _already_reflected(event: dict[str, Any], intent_id: str) -> bool:
    """A ``payment_intent.succeeded`` whose success CartFlow has recorded and acted on already.

    ``succeeded`` is a PaymentIntent's last status (refunds and disputes arrive as ``charge.*`` events,
    which are always re-fetched), and the event is signed, so when our Payment row says succeeded and every
    listener (the checkout) says it is settled at succeeded, re-fetching the intent from Stripe and
    notifying would change nothing. The synchronous confirm usually gets there before the webhook: this
    saves a Stripe read per order (Stripe rate-limits reads) and the worker's lease round trips."""
    if event["type"] != "payment_intent.succeeded" or event["data"]["object"].get("status") != "succeeded":
        return False
    recorded = Payment.objects.filter(intent_id=intent_id).values_list("status", flat=True).first()
    return recorded == "succeeded" and intent_listeners_settled(intent_id=intent_id, status="succeeded")


def _sync_and_notify(event: dict[str, Any], *, dispute: bool = False) -> None:
    intent_id = _intent_id_in(event)
    if not intent_id:
        raise LookupError(f"{event['type']} carries no PaymentIntent")
    if not dispute and _already_reflected(event, intent_id):
        log.info("webhook_already_reflected", event_id=event["id"], intent_id=intent_id)
        return
    intent = payment_intent_retrieve(intent_id=intent_id)  # re-fetch: never trust the payload
    if dispute:
        intent = _with_dispute(intent)
    payment = payment_sync_from_intent(intent=intent)
    if dispute and not payment.disputed:
        Payment.objects.filter(pk=payment.pk).update(disputed=True, updated=timezone.now())
    intent_listeners_notify(intent=intent, source="webhook")


def _with_dispute(intent: IntentResult) -> IntentResult:
    from dataclasses import replace

    # The event is signed, so a dispute was opened; the flag stays for staff until they act in Stripe.
    return replace(intent, disputed=True)


HANDLERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "payment_intent.succeeded": _sync_and_notify,
    "payment_intent.payment_failed": _sync_and_notify,
    "payment_intent.canceled": _sync_and_notify,
    "payment_intent.requires_action": _sync_and_notify,
    "charge.refunded": _sync_and_notify,
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
