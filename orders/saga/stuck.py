"""Which sagas are stuck, why, and since when: what ``recover_sagas`` picks up (:func:`sagas_stuck`) and
what the admin's stuck list shows (:func:`sagas_needing_attention`, :func:`stuck_reasons`).

Each saga gets one reason, the first of these that applies (the most specific first):

    reason                 what holds it                                         since
    needs_human            flagged ``requires_human`` (a refused capture, …)     its step's last log row
    webhook_parked         a webhook event for its PaymentIntent parked or       when the event arrived
                           failed in payments (read through payments' selector)
    charge_indeterminate   the charge is ``about_to`` or ``indeterminate``:      its step's last log row
                           only the PaymentIntent as Stripe has it settles it
    lease_lapsed           a process stopped mid-step holding the lease          the lease's expiry
    hold_expired           awaiting payment (or 3-D Secure) past its hold        ``expires_at``
    half_way               no process drives it and it is not where a buyer      its step's last log row
                           waits (reserved, paid, compensating, a step begun)

"Its step's last log row" is the newest SagaStep row of the saga's current step and status (``updated_at``
when there is none): ``updated_at`` itself moves with every lease taken and given back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from orders.models import CheckoutSaga, SagaStep
from orders.saga.persistence import ABOUT_TO, INDETERMINATE
from payments.selectors import webhook_events_unsettled, webhook_intents_unsettled

S = CheckoutSaga.State

NEEDS_HUMAN = "needs_human"
WEBHOOK_PARKED = "webhook_parked"
CHARGE_INDETERMINATE = "charge_indeterminate"
LEASE_LAPSED = "lease_lapsed"
HOLD_EXPIRED = "hold_expired"
HALF_WAY = "half_way"

# For the admin's filter, in the order a saga's reason is chosen.
REASONS: list[tuple[str, str]] = [
    (NEEDS_HUMAN, "needs a human"),
    (WEBHOOK_PARKED, "webhook parked"),
    (CHARGE_INDETERMINATE, "charge outcome unknown"),
    (LEASE_LAPSED, "lease lapsed mid-step"),
    (HOLD_EXPIRED, "hold past expiry"),
    (HALF_WAY, "left half-way"),
]


@dataclass(frozen=True)
class StuckReason:
    code: str  # one of REASONS
    text: str  # for staff: what holds it, with the step, error or event
    since: datetime


def sagas_stuck(*, now: datetime | None = None) -> QuerySet[CheckoutSaga]:
    """What ``recover_sagas`` resumes: non-terminal sagas whose lease lapsed mid-work, or whose hold is past
    expiry, or left unattended half-way."""
    now = now or timezone.now()
    lapsed = Q(lease_owner__gt="", lease_expires_at__lt=now)
    unattended = Q(lease_owner="") & (
        Q(state__in=[S.RESERVED, S.PAID])
        | Q(compensate_to__gt="")
        | Q(step_status__in=[ABOUT_TO, INDETERMINATE])
        | Q(state__in=[S.AWAITING_PAYMENT, S.REQUIRES_ACTION], expires_at__lt=now)
    )
    # A confirmed saga is the outbox's to finish; it is stuck only if a process died holding its lease.
    return CheckoutSaga.objects.exclude(state__in=CheckoutSaga.TERMINAL).filter(
        lapsed | (unattended & ~Q(state=S.CONFIRMED))
    )


def sagas_needing_attention(*, now: datetime | None = None) -> QuerySet[CheckoutSaga]:
    """The admin's stuck list: what recovery would pick up, every saga flagged for a human, and every
    unfinished saga whose PaymentIntent has a webhook event parked or failed in payments."""
    parked = Q(payment_intent_id__in=webhook_intents_unsettled()) & ~Q(state__in=CheckoutSaga.TERMINAL)
    return CheckoutSaga.objects.filter(Q(pk__in=sagas_stuck(now=now).values("pk")) | Q(requires_human=True) | parked)


def stuck_reasons(sagas: Iterable[CheckoutSaga], *, now: datetime | None = None) -> dict[int, StuckReason]:
    """Why each of ``sagas`` is stuck, by primary key (a saga that is not stuck has no entry). Two reads
    whatever their number: the newest log row of each saga's current step, and the unsettled webhook events
    of their PaymentIntents."""
    now = now or timezone.now()
    sagas = list(sagas)
    if not sagas:
        return {}
    step_at = {
        (row["saga_id"], row["step"], row["outcome"]): row["at"]
        for row in SagaStep.objects.filter(saga_id__in=[s.pk for s in sagas])
        .values("saga_id", "step", "outcome")
        .annotate(at=Max("at"))
    }
    events: dict[str, list] = {}
    for event in webhook_events_unsettled(intent_ids=[s.payment_intent_id for s in sagas if s.payment_intent_id]):
        events.setdefault(event.intent_id, []).append(event)
    reasons = {}
    for saga in sagas:
        since = step_at.get((saga.pk, saga.step, saga.step_status), saga.updated_at)
        reason = _reason(saga, now=now, step_since=since, events=events.get(saga.payment_intent_id, []))
        if reason is not None:
            reasons[saga.pk] = reason
    return reasons


def _reason(saga: CheckoutSaga, *, now: datetime, step_since: datetime, events: list) -> StuckReason | None:
    if saga.requires_human:
        code = f" ({saga.last_error_code})" if saga.last_error_code else ""
        return StuckReason(
            NEEDS_HUMAN, f"needs a human{code}: {saga.human_reason or saga.last_error_message}", step_since
        )
    if saga.is_terminal:
        return None
    if events:
        first = events[0]
        more = f" and {len(events) - 1} more" if len(events) > 1 else ""
        text = f"webhook {first.event_id} ({first.type}) {first.status}{more}: {first.last_error[:200]}"
        return StuckReason(WEBHOOK_PARKED, text, first.received_at)
    leased = bool(saga.lease_owner)
    lapsed = leased and saga.lease_expires_at is not None and saga.lease_expires_at < now
    if saga.step == "charge" and saga.step_status in (ABOUT_TO, INDETERMINATE) and (lapsed or not leased):
        text = f"charge outcome unknown ({saga.step_status}, attempt {saga.attempt}): Stripe's PaymentIntent settles it"
        return StuckReason(CHARGE_INDETERMINATE, text, step_since)
    if lapsed:
        return StuckReason(LEASE_LAPSED, f"lease lapsed mid {saga.step} ({saga.step_status})", saga.lease_expires_at)
    if leased or saga.state == S.CONFIRMED:
        return None  # a live process drives it, or the outbox finishes it
    waiting = saga.state in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION)
    if waiting and saga.expires_at is not None and saga.expires_at < now:
        return StuckReason(HOLD_EXPIRED, f"hold past expiry while {saga.state}", saga.expires_at)
    if saga.compensate_to:
        return StuckReason(HALF_WAY, f"compensating to {saga.compensate_to}, at {saga.step}", step_since)
    if saga.state in (S.RESERVED, S.PAID) or saga.step_status in (ABOUT_TO, INDETERMINATE):
        return StuckReason(HALF_WAY, f"left half-way: {saga.state}, {saga.step} {saga.step_status}", step_since)
    return None


def sagas_stuck_for(reason: str, *, now: datetime | None = None) -> list[int]:
    """The primary keys of the sagas whose reason (:func:`stuck_reasons`) is ``reason``."""
    now = now or timezone.now()
    reasons = stuck_reasons(sagas_needing_attention(now=now), now=now)
    return [pk for pk, why in reasons.items() if why.code == reason]
