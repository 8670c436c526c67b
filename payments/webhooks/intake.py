"""Webhook intake: verify the signature, store the event once by its id, enqueue its processing.

Runs inside the HTTP request (payments/apis.py), so it does no more than that: the Stripe read and the
listeners run later, in the task (payments/tasks.py), which calls payments/webhooks/handlers.py.
"""

from __future__ import annotations

from typing import Any

import stripe
import structlog
from django.conf import settings
from django.db import transaction

from payments.errors import MalformedEvent, WebhookSignatureInvalid
from payments.metrics import webhook_received
from payments.models import WebhookEvent
from payments.tasks import process_webhook_event
from payments.webhooks.handlers import event_intent_id

log = structlog.get_logger("cartflow.payments.webhooks")


def _secrets() -> list[str]:
    return [s.strip() for s in settings.STRIPE_WEBHOOK_SECRET.split(",") if s.strip()]


def webhook_verify(*, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event as a dict, if ``signature`` matches one of the configured secrets within the tolerance.

    Raises :class:`WebhookSignatureInvalid` or :class:`MalformedEvent`.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedEvent("The body is not UTF-8 text.") from None
    if not signature:
        raise WebhookSignatureInvalid("The Stripe-Signature header is missing.")
    for secret in _secrets():  # several during a rotation
        try:
            event = stripe.Webhook.construct_event(text, signature, secret, settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError:
            continue
        except Exception:  # signed, but not JSON or not an object
            raise MalformedEvent("The body is not a Stripe event.") from None
        break
    else:
        raise WebhookSignatureInvalid(
            "The Stripe-Signature header does not match the body, or its timestamp is too old."
        )
    data = event.to_dict()
    if data.get("object") != "event" or not data.get("id") or not data.get("type"):
        raise MalformedEvent("The body is not a Stripe event.")
    if not isinstance((data.get("data") or {}).get("object"), dict):
        raise MalformedEvent("The event carries no data.object.")
    _check_stored_fields(data)
    return data


# What intake stores in WebhookEvent's columns, and their sizes there (payments/models.py). Stripe's own ids
# are far shorter; anything else signed with our secret is refused cleanly instead of failing the INSERT.
_STORED_FIELDS = (("id", 255), ("type", 100), ("payment intent id", 255))


def _check_stored_fields(event: dict[str, Any]) -> None:
    values = {"id": event.get("id"), "type": event.get("type"), "payment intent id": event_intent_id(event)}
    for name, max_length in _STORED_FIELDS:
        value = values[name]
        if not isinstance(value, str) or len(value) > max_length or not value.isprintable():
            raise MalformedEvent(f"The event's {name} is not a string of at most {max_length} printable characters.")


def webhook_event_receive(*, payload: bytes, signature: str | None) -> WebhookEvent:
    """Verify, store once by event id, and enqueue processing after commit. Duplicates change nothing."""
    try:
        event = webhook_verify(payload=payload, signature=signature)
    except (WebhookSignatureInvalid, MalformedEvent):
        webhook_received("invalid")
        raise
    with transaction.atomic():
        stored, created = WebhookEvent.objects.get_or_create(
            event_id=event["id"],
            defaults={
                "type": event["type"],
                "payload": payload.decode("utf-8"),
                "intent_id": event_intent_id(event),
            },
        )
        if created or stored.status in (WebhookEvent.RECEIVED, WebhookEvent.PARKED):
            # A redelivery of an event still pending (or parked) is a good moment to try it again.
            event_id = stored.event_id
            transaction.on_commit(lambda: process_webhook_event.delay(event_id))
    webhook_received("new" if created else "duplicate")
    log.info("webhook_received", event_id=stored.event_id, type=stored.type, duplicate=not created)
    return stored
