"""Deliveries: an event fanned out to the endpoints, one attempt of one delivery, the retry schedule, re-send.

Every function here runs in a Celery task (orders/tasks.py) or an admin action, never in the saga.

- :func:`outbound_event_fan_out`: the event's body rendered once (orders/outbound/body.py), one
  WebhookDelivery per endpoint that takes the event's type (``CARTFLOW_WEBHOOK_ENDPOINTS`` and the active
  WebhookEndpoint rows), each handed to its own task.
- :func:`webhook_delivery_attempt`: claims the delivery if it is due (a conditional UPDATE, so a task and
  the sweep never both send it), POSTs the stored body signed afresh (orders/outbound/signing.py), records
  the attempt, and on anything but a 2xx schedules the next one (:func:`retry_delay`) until
  ``give_up_at`` (``CARTFLOW_WEBHOOK_DELIVERY_RETRY_FOR_SECONDS`` after the fan-out), then parks it.
- :func:`webhook_delivery_resend`: admin's re-send: due now, with a new retry window; same event, same id.
- :func:`webhook_deliveries_sweep`: beat's safety net for a lost hand-off or a retry too far off for a
  countdown.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import structlog
from celery import signature
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from orders.models import OutboundEvent, WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from orders.outbound.body import event_body
from orders.outbound.events import FAN_OUT_TASK
from orders.outbound.signing import EVENT_ID_HEADER, HEADER, signature_header

log = structlog.get_logger("cartflow.webhooks_out")

DELIVERY_TASK = "orders.tasks.webhook_delivery_task"
RESPONSE_HEAD_BYTES = 512
# Retries further off than this wait for the sweep: a countdown task sits in a worker's memory, and past the
# broker's visibility timeout (cartflow/settings.py) Redis would hand it out a second time.
COUNTDOWN_MAX_SECONDS = 300
D = WebhookDelivery.Status


# --- the schedule -----------------------------------------------------------------------------------------


def retry_delay(attempts: int, *, rng: Callable[[], float] = random.random) -> float:
    """Seconds from failed attempt number ``attempts`` to the next: ``base × 2^(attempts-1)`` capped at
    ``CARTFLOW_WEBHOOK_DELIVERY_RETRY_MAX_SECONDS``, jittered in its upper half (so receivers coming back
    from an outage do not get every shop's retries at the same second, and no retry comes sooner than half
    its step)."""
    base = settings.CARTFLOW_WEBHOOK_DELIVERY_RETRY_BASE_SECONDS
    ceiling = min(settings.CARTFLOW_WEBHOOK_DELIVERY_RETRY_MAX_SECONDS, base * 2 ** min(max(attempts, 1) - 1, 30))
    return ceiling / 2 + rng() * ceiling / 2


def _retry_window() -> timedelta:
    return timedelta(seconds=settings.CARTFLOW_WEBHOOK_DELIVERY_RETRY_FOR_SECONDS)


# --- fan-out ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    endpoint_id: int | None  # None: a URL from CARTFLOW_WEBHOOK_ENDPOINTS


def endpoints_for(event_type: str) -> list[Target]:
    """Where an event of ``event_type`` goes: the configured URLs, and the active admin endpoints that take
    the type. A URL that is also an admin row is that row's to decide (its secret, its types)."""
    rows = {row.url: row for row in WebhookEndpoint.objects.all()}
    targets = {url: Target(url, None) for url in settings.CARTFLOW_WEBHOOK_ENDPOINTS if url not in rows}
    for row in rows.values():
        if row.active and (not row.event_types or event_type in row.event_types):
            targets[row.url] = Target(row.url, row.pk)
    return list(targets.values())


def outbound_event_fan_out(*, event_id: int) -> int:
    """One delivery per target, each handed to its own task. Safe twice (one delivery per event and URL).
    Returns how many were handed out."""
    event = OutboundEvent.objects.filter(pk=event_id).first()
    if event is None or event.fanned_out_at is not None:
        return 0
    targets = endpoints_for(event.type)
    now = timezone.now()
    if not targets:  # the common case without endpoints: one UPDATE, nothing rendered
        OutboundEvent.objects.filter(pk=event_id, fanned_out_at__isnull=True).update(fanned_out_at=now)
        return 0
    if not event.body:
        OutboundEvent.objects.filter(pk=event_id, body="").update(body=event_body(event))
    WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                event_id=event_id,
                endpoint_id=target.endpoint_id,
                url=target.url,
                next_attempt_at=now,
                give_up_at=now + _retry_window(),
            )
            for target in targets
        ],
        ignore_conflicts=True,
    )
    OutboundEvent.objects.filter(pk=event_id, fanned_out_at__isnull=True).update(fanned_out_at=now)
    fresh = list(
        WebhookDelivery.objects.filter(event_id=event_id, status=D.PENDING, attempts=0).values_list("pk", flat=True)
    )
    for pk in fresh:
        _enqueue_attempt(pk)
    return len(fresh)


# --- one attempt ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """What one POST did."""

    signed_at: int
    duration_ms: int
    status_code: int | None = None
    error: str = ""
    head: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def webhook_delivery_attempt(*, delivery_id: int) -> str:
    """Attempt the delivery if it is due; returns its status after (or ``not_due``)."""
    now = timezone.now()
    in_flight_until = now + timedelta(seconds=2 * settings.CARTFLOW_WEBHOOK_DELIVERY_TIMEOUT_SECONDS + 30)
    claimed = WebhookDelivery.objects.filter(pk=delivery_id, status=D.PENDING, next_attempt_at__lte=now).update(
        attempts=F("attempts") + 1, next_attempt_at=in_flight_until, updated_at=now
    )
    if not claimed:
        return "not_due"
    delivery = WebhookDelivery.objects.select_related("event", "endpoint").get(pk=delivery_id)
    gone = _target_gone(delivery)
    if gone:
        _park(delivery, gone)
        return D.PARKED
    secret = _signing_secret(delivery)
    if not secret:
        sent = Sent(signed_at=int(time.time()), duration_ms=0, error="no signing secret configured")
    else:
        sent = post_signed(url=delivery.url, event=delivery.event, secret=secret)
    return _record(delivery, sent)


def _target_gone(delivery: WebhookDelivery) -> str:
    """Why the delivery's endpoint takes no more attempts ('' while it does)."""
    if delivery.endpoint_id is not None:
        return "" if delivery.endpoint.active else "endpoint deactivated"
    if delivery.url in settings.CARTFLOW_WEBHOOK_ENDPOINTS:
        return ""
    return "" if WebhookEndpoint.objects.filter(url=delivery.url, active=True).exists() else "endpoint removed"


def _signing_secret(delivery: WebhookDelivery) -> str:
    endpoint = delivery.endpoint
    if endpoint is None:
        endpoint = WebhookEndpoint.objects.filter(url=delivery.url).first()
    return (endpoint.secret if endpoint is not None else "") or settings.CARTFLOW_WEBHOOK_SIGNING_SECRET


def post_signed(*, url: str, event: OutboundEvent, secret: str) -> Sent:
    """POST the event's stored body, signed now; no redirect followed; only a short head of the answer read."""
    body = event.body.encode()
    signed_at = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "CartFlow-Webhooks/1",
        HEADER: signature_header(body=body, secret=secret, timestamp=signed_at),
        EVENT_ID_HEADER: event.public_id,
        "CartFlow-Event-Type": event.type,
    }
    timeout = settings.CARTFLOW_WEBHOOK_DELIVERY_TIMEOUT_SECONDS
    started = time.monotonic()
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)), follow_redirects=False) as client:
            with client.stream("POST", url, content=body, headers=headers) as response:
                head = _read_head(response)
                status = response.status_code
    except httpx.HTTPError as exc:
        return Sent(signed_at, _ms_since(started), error=f"{exc.__class__.__name__}: {exc}"[:500])
    return Sent(signed_at, _ms_since(started), status_code=status, head=head)


def _read_head(response: httpx.Response) -> str:
    """The first bytes of the answer, for staff; the rest is never read (the connection is dropped)."""
    head = b""
    for chunk in response.iter_bytes():
        head += chunk
        if len(head) >= RESPONSE_HEAD_BYTES:
            break
    return head[:RESPONSE_HEAD_BYTES].decode(errors="replace")


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _record(delivery: WebhookDelivery, sent: Sent) -> str:
    """The attempt's row and the delivery's new state, unless a later claim (a re-send) took it over."""
    now = timezone.now()
    status, due, delay = D.DELIVERED, None, 0.0
    if not sent.ok:
        delay = retry_delay(delivery.attempts)
        due = now + timedelta(seconds=delay)
        status = D.PENDING if due <= delivery.give_up_at else D.PARKED
    error = sent.error or ("" if sent.ok else f"HTTP {sent.status_code}")
    with transaction.atomic():
        WebhookDeliveryAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            at=now,
            signed_at=sent.signed_at,
            duration_ms=sent.duration_ms,
            status_code=sent.status_code,
            error=sent.error,
            response_head=sent.head,
        )
        WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
            status=status,
            next_attempt_at=due if status == D.PENDING else None,
            delivered_at=now if sent.ok else None,
            last_status_code=sent.status_code,
            last_error=error,
            updated_at=now,
        )
    log.info(
        "webhook_delivery_attempted",
        event_id=delivery.event.public_id,
        url=delivery.url,
        attempt=delivery.attempts,
        status_code=sent.status_code,
        error=sent.error or None,
        outcome=status,
        retry_in=round(delay, 1) if status == D.PENDING else None,
    )
    if status == D.PENDING and delay <= COUNTDOWN_MAX_SECONDS:
        transaction.on_commit(lambda: _enqueue_attempt(delivery.pk, countdown=delay))
    return status


def _park(delivery: WebhookDelivery, reason: str) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
        status=D.PARKED, next_attempt_at=None, last_error=reason, updated_at=timezone.now()
    )
    log.warning("webhook_delivery_parked", event_id=delivery.event.public_id, url=delivery.url, reason=reason)


# --- staff and the sweep ----------------------------------------------------------------------------------


def webhook_delivery_resend(*, delivery_id: int, by: str = "") -> bool:
    """Send the delivery's event again now (same event, same id, a fresh signature), with a new retry
    window, whatever its status. False if there is no such delivery."""
    now = timezone.now()
    found = WebhookDelivery.objects.filter(pk=delivery_id).update(
        status=D.PENDING, next_attempt_at=now, give_up_at=now + _retry_window(), updated_at=now
    )
    if found:
        log.info("webhook_delivery_resent", delivery_id=delivery_id, by=by)
        transaction.on_commit(lambda: _enqueue_attempt(delivery_id))
    return bool(found)


def webhook_deliveries_sweep(*, now: datetime | None = None, older_than_seconds: int = 30, limit: int = 500) -> int:
    """Hand out what nobody did: events not fanned out after a while, deliveries due. Returns how many."""
    now = now or timezone.now()
    events = list(
        OutboundEvent.objects.filter(
            fanned_out_at__isnull=True, created_at__lt=now - timedelta(seconds=older_than_seconds)
        ).values_list("pk", flat=True)[:limit]
    )
    for pk in events:
        signature(FAN_OUT_TASK, args=(pk,)).delay()
    due = list(
        WebhookDelivery.objects.filter(status=D.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    for pk in due:
        _enqueue_attempt(pk)
    return len(events) + len(due)


def _enqueue_attempt(delivery_id: int, *, countdown: float | None = None) -> None:
    try:
        # By name: orders/tasks.py imports this module.
        signature(DELIVERY_TASK, args=(delivery_id,), countdown=countdown).apply_async(retry=False)
    except Exception:  # noqa: BLE001 - the broker is down: the sweep hands it out when it is back
        log.warning("webhook_delivery_enqueue_failed", delivery_id=delivery_id)
