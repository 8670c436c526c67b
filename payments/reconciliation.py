"""Reconciliation: compare each recent Payment with its PaymentIntent in Stripe and repair drift.

Drift kinds (a row can show several):

- ``succeeded_in_stripe_only``: Stripe charged, we did not record it (a lost response, a missed webhook)
  → sync the row and tell the listeners (source ``"reconcile"``) so the order catches up.
- ``succeeded_here_only``: we think it is paid, Stripe does not → sync the row and tell the listeners.
- ``authorized_in_stripe_only``: Stripe holds an authorization (manual capture) we did not record → sync the
  row and tell the listeners, so the order is confirmed (and its fulfilment captures).
- ``authorization_lost``: we hold an authorization that Stripe canceled (voided in the dashboard, or expired
  before fulfilment captured it) → sync and tell the listeners; a human looks unless the order was cancelled.
- ``status_drift`` / ``refund_drift``: any other difference in status or refunded amount → sync.
- ``charge_on_cancelled_order``: the order was cancelled but the charge stands → refund it.
- ``open_intent_on_cancelled_order`` / ``authorization_on_cancelled_order``: the order was cancelled, the
  PaymentIntent is still open or holds an authorization → cancel it (an authorization is voided, not refunded).
- ``dispute``: the charge is disputed → a human answers it in Stripe's dashboard.
- ``refund_unfinished``: a numbered refund Stripe never answered (a crash, a lost response) for more than
  ``UNFINISHED_REFUND_SECONDS`` → asked again with its own key (payments/refunds.py), which settles it.

Stripe calls happen outside any transaction; each repair is its own short write.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import structlog
from django.utils import timezone

from payments import budget as stripe_budget
from payments.errors import PaymentPermanentError, PaymentProviderBusy, PaymentTransientError, RefundFailed
from payments.gateway import payment_intent_cancel, payment_intent_retrieve, refund_create
from payments.hooks import intent_listeners_notify
from payments.interface import CANCELABLE, IntentResult
from payments.models import Payment
from payments.refunds import refund_execute, refunds_unfinished
from payments.selectors import payments_to_reconcile
from payments.services import payment_sync_from_intent

log = structlog.get_logger("cartflow.payments.reconcile")
# A numbered refund this long without Stripe's answer is not waiting on a live call any more.
UNFINISHED_REFUND_SECONDS = 60


@dataclass
class ReconcileRow:
    order_id: str
    intent_id: str
    here: str
    stripe: str
    drift: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    needs_human: bool = False


@dataclass
class ReconcileReport:
    checked: int = 0
    rows: list[ReconcileRow] = field(default_factory=list)

    @property
    def needs_human(self) -> bool:
        return any(row.needs_human for row in self.rows)

    def summary(self) -> dict:
        kinds: dict[str, int] = {}
        for row in self.rows:
            for kind in row.drift:
                kinds[kind] = kinds.get(kind, 0) + 1
        return {
            "checked": self.checked,
            "drifted": len(self.rows),
            "needs_human": sum(r.needs_human for r in self.rows),
            "kinds": kinds,
        }

    def as_table(self) -> str:
        head = ("order", "payment intent", "here", "stripe", "drift", "action", "human?")
        lines = [
            (
                r.order_id,
                r.intent_id or "-",
                r.here or "-",
                r.stripe or "-",
                "+".join(r.drift),
                "; ".join(r.actions),
                "YES" if r.needs_human else "",
            )
            for r in self.rows
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        out += [fmt.format(*line) for line in lines]
        s = self.summary()
        out.append(f"checked {s['checked']}, drifted {s['drifted']}, needing a human {s['needs_human']}")
        return "\n".join(out)

    def as_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.rows]


@stripe_budget.background()  # its Stripe calls yield to buyers' calls (payments/budget.py)
def payments_reconcile(*, since: datetime | None = None, payment_ids: list[int] | None = None) -> ReconcileReport:
    """Check every Payment updated since ``since`` (all without it) against Stripe; repair and report."""
    report = ReconcileReport()
    for payment in payments_to_reconcile(since=since, ids=payment_ids).iterator():
        report.checked += 1
        row = payment_reconcile_one(payment=payment)
        if row is not None:
            report.rows.append(row)
    log.info("reconcile_report", **report.summary())
    return report


def payment_reconcile_one(*, payment: Payment) -> ReconcileRow | None:
    """The drift of one payment, repaired; None when there was none."""
    if not payment.intent_id:
        # No PaymentIntent yet: the order has not been paid for (the intent is created when the buyer pays),
        # or its create-and-confirm lost its answer, which the checkout's recovery replays with the same key.
        return None
    row = ReconcileRow(payment.order_id, payment.intent_id, payment.status, "")
    try:
        intent = payment_intent_retrieve(intent_id=payment.intent_id)
    except PaymentProviderBusy:
        row.drift.append("unverified")  # buyers' calls had the whole Stripe budget: the next run checks it
        row.actions.append("skipped: Stripe budget busy")
        return row
    except (PaymentTransientError, PaymentPermanentError) as exc:
        row.drift.append("unverified")
        row.actions.append(f"could not read Stripe: {exc}")
        row.needs_human = True
        return row
    row.stripe = intent.status
    if _finish_unfinished_refunds(row, payment):
        intent = payment_intent_retrieve(intent_id=payment.intent_id)

    changed = False
    if intent.succeeded and payment.status != "succeeded":
        row.drift.append("succeeded_in_stripe_only")
        changed = True
    elif payment.status == "succeeded" and not intent.succeeded:
        row.drift.append("succeeded_here_only")
        changed = True
    elif intent.status == "requires_capture" and payment.status != "requires_capture":
        row.drift.append("authorized_in_stripe_only")
        changed = True
    elif payment.status == "requires_capture" and intent.canceled:
        row.drift.append("authorization_lost")
        row.needs_human = payment.order_cancelled_at is None  # a live order can no longer be paid with it
        changed = True
    elif payment.status != intent.status:
        row.drift.append("status_drift")
        changed = True
    if payment.amount_refunded != intent.amount_refunded:
        row.drift.append("refund_drift")
    refunds_moved = payment.amount_refunded != intent.amount_refunded
    if refunds_moved or changed or (intent.disputed and not payment.disputed):
        payment_sync_from_intent(intent=intent, force=True)
        row.actions.append("synced")
    if changed or refunds_moved:
        _notify(row, intent)

    if payment.order_cancelled_at is not None:
        intent = _settle_cancelled_order(row, payment, intent)

    if payment.disputed or intent.disputed:
        row.drift.append("dispute")
        row.actions.append("answer the dispute in Stripe")
        row.needs_human = True
    return row if row.drift else None


def _finish_unfinished_refunds(row: ReconcileRow, payment: Payment) -> bool:
    """Ask again, with its own key, for each numbered refund left ``requested`` long enough that no live
    call can still be waiting for it. True when one was asked."""
    cutoff = timezone.now() - timedelta(seconds=UNFINISHED_REFUND_SECONDS)
    stale = [r for r in refunds_unfinished(order_id=payment.order_id) if r.created < cutoff]
    for refund in stale:
        row.drift.append("refund_unfinished")
        try:
            settled = refund_execute(refund_id=refund.pk)
            row.actions.append(f"refund #{refund.seq} asked again: {settled.status}")
        except RefundFailed as exc:
            row.actions.append(f"refund #{refund.seq} asked again: failed ({exc.detail})")
        except (PaymentTransientError, PaymentProviderBusy) as exc:
            row.actions.append(f"refund #{refund.seq} still unanswered: {exc.detail}")
    return bool(stale)


def _notify(row: ReconcileRow, intent: IntentResult) -> None:
    try:
        intent_listeners_notify(intent=intent, source="reconcile")
        row.actions.append("order told")
    except Exception as exc:  # the order side could not apply it: someone must look
        log.error("reconcile_listener_failed", order_id=row.order_id, exc_info=exc)
        row.actions.append(f"order not updated: {exc.__class__.__name__}: {exc}")
        row.needs_human = True


def _settle_cancelled_order(row: ReconcileRow, payment: Payment, intent: IntentResult) -> IntentResult:
    """A cancelled order keeps no money: refund a standing charge, cancel an open PaymentIntent."""
    try:
        if intent.succeeded and intent.amount_refunded < intent.amount:
            row.drift.append("charge_on_cancelled_order")
            refund = refund_create(order_id=payment.order_id, intent_id=intent.intent_id)
            row.actions.append(f"refunded {refund.amount} ({refund.refund_id}, {refund.status})")
            if refund.status not in ("succeeded", "pending"):
                row.needs_human = True
        elif intent.status in CANCELABLE:
            authorized = intent.status == "requires_capture"
            row.drift.append("authorization_on_cancelled_order" if authorized else "open_intent_on_cancelled_order")
            intent = payment_intent_cancel(order_id=payment.order_id, intent_id=intent.intent_id)
            row.actions.append(f"{'voided authorization' if authorized else 'cancelled intent'} ({intent.status})")
            if intent.succeeded:  # it succeeded meanwhile: next run refunds it
                row.needs_human = True
        else:
            return intent
        intent = payment_intent_retrieve(intent_id=intent.intent_id)
        payment_sync_from_intent(intent=intent, force=True)
    except (PaymentTransientError, PaymentPermanentError, PaymentProviderBusy) as exc:
        row.actions.append(f"repair failed: {exc}")
        row.needs_human = True
    return intent
