"""Thin Celery tasks: fulfilment from the outbox, the outbox sweep, saga recovery, due authorizations,
outbound webhooks."""

from __future__ import annotations

from celery import shared_task
from redis.exceptions import RedisError

from orders import services
from orders.errors import CheckoutInProgress
from orders.outbound import delivery as webhooks_out
from orders.saga.authorizations import authorizations_settle
from orders.saga.driver import saga_recover
from payments import budget as stripe_budget
from payments.errors import PaymentProviderBusy, PaymentTransientError


@shared_task(
    # Stripe errors: fulfilment captures an authorized order first, and retries the capture under its key.
    autoretry_for=(CheckoutInProgress, RedisError, ConnectionError, PaymentTransientError, PaymentProviderBusy),
    retry_backoff=2,
    retry_backoff_max=300,
    max_retries=None,
    acks_late=True,
)
def outbox_process_task(outbox_id: int) -> None:
    with stripe_budget.background():  # a capture at fulfilment yields to buyers' calls (payments/budget.py)
        services.outbox_process(outbox_id=outbox_id)


@shared_task
def outbox_sweep_task() -> int:
    return services.outbox_sweep()


@shared_task
def recover_sagas_task() -> dict[str, int]:
    with stripe_budget.background():  # recovery's Stripe calls yield to buyers' (payments/budget.py)
        return saga_recover()


@shared_task
def authorizations_settle_task() -> dict[str, int]:
    """Hourly (django-celery-beat): capture or void authorizations older than CARTFLOW_CAPTURE_WITHIN_HOURS."""
    with stripe_budget.background():
        return authorizations_settle()


# --- outbound webhooks (orders/outbound/delivery.py) --------------------------------------------------------


@shared_task(acks_late=True, ignore_result=True)
def webhook_event_fan_out_task(event_id: int) -> int:
    return webhooks_out.outbound_event_fan_out(event_id=event_id)


# On the "webhooks" queue (cartflow/settings.py, CELERY_TASK_ROUTES): a receiver that is slow to answer holds
# a slot of the workers that consume it, never one of fulfilment's when deliveries have workers of their own.
# No Celery retry: the delivery row holds the schedule, and each attempt enqueues the next.
@shared_task(acks_late=True, ignore_result=True)
def webhook_delivery_task(delivery_id: int) -> str:
    return webhooks_out.webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(ignore_result=True)
def webhook_sweep_task() -> int:
    return webhooks_out.webhook_deliveries_sweep()
