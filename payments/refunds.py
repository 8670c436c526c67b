"""Numbered refunds of a captured payment: the amount is taken in the database before Stripe is called.

A refund is three writes with the Stripe call between the first two, and no transaction open across it:

1. **reserve** (:func:`refund_reserve`), ONE statement: a version-checked conditional UPDATE of the Payment
   row (``refund_seq`` + 1, ``refund_reserved`` + amount, only if the row still has the ``refund_seq`` that
   was read and the refunds stay within the amount paid) with the INSERT of the numbered ``Refund`` row,
   ``requested``. Two staff refunding at once both read the same row; the UPDATE of the second waits for
   the first to commit and then matches nothing (its ``refund_seq`` is gone), so it reads again and is told
   what is left. The CHECK ``refund_reserved <= amount`` holds even if this code is wrong.
2. **call** (:func:`refund_execute`): ``gateway.refund_create`` with the key ``cf:<order>:refund:<seq>``.
3. **settle** (:func:`_settle`): the row moves on (pending, succeeded, failed, canceled) with a
   conditional UPDATE that only goes forward; a refund that failed gives its amount back to
   ``refund_reserved`` in the same statement, exactly once.

A process that dies between 1 and 3 leaves the row ``requested``. Calling :func:`refund_execute` again
(the next refund or cancellation of the order, the ``charge.refunded`` webhook, the hourly reconciliation)
replays the same key: Stripe answers with the refund it made, or makes it now. While a refund of a payment
is ``requested`` no other one is reserved (:class:`RefundInProgress`), so a retried command never refunds
twice. Later changes at Stripe (a refund that fails days later) come through :func:`refund_sync`.
"""

from __future__ import annotations

from django.db import connection
from django.utils import timezone

from cartflow.money import money_format
from payments.errors import (
    PaymentPermanentError,
    PaymentProviderBusy,
    PaymentTransientError,
    RefundExceedsRemaining,
    RefundFailed,
    RefundInProgress,
)
from payments.gateway import payment_intent_retrieve, refund_create, refund_key
from payments.interface import RefundResult
from payments.models import Payment, Refund
from payments.services import payment_sync_from_intent

RESERVE_ATTEMPTS = 5  # lost version checks in a row before "busy": each loss means another refund was reserved
S = Refund.Status
# How far each status is along; a settle only moves a row to a status further along.
_RANK = {S.REQUESTED: 0, S.PENDING: 1, S.SUCCEEDED: 2, S.FAILED: 3, S.CANCELED: 3}
_GIVES_BACK = (S.FAILED, S.CANCELED)  # a refund that ends here refunded nothing: its amount is free again


def refund_reserve(*, order_id: str, amount: int | None = None) -> Refund:
    """Take ``amount`` (all that is left, without it) of the order's captured payment for refund number
    ``refund_seq + 1``. Raises :class:`RefundExceedsRemaining` (nothing taken) or :class:`RefundInProgress`
    (another refund of it has not settled; also after ``RESERVE_ATTEMPTS`` lost races)."""
    if amount is not None and amount < 1:
        raise ValueError("a refund amount is a positive number of minor units")
    for _attempt in range(RESERVE_ATTEMPTS):
        payment = _payment_row(order_id)
        remaining = _remaining(payment)
        currency = payment.currency if payment is not None else ""
        if payment is not None and payment.status == "succeeded":
            unfinished = refunds_unfinished(order_id=order_id)
            if unfinished:
                raise _in_progress(order_id, unfinished[0])
        asked = remaining if amount is None else amount
        if payment is None or payment.status != "succeeded" or asked < 1 or asked > remaining:
            raise RefundExceedsRemaining(
                _exceeds_detail(payment, asked, remaining), orderId=order_id, remaining=remaining, currency=currency
            )
        refund = _reserve(payment, amount=asked)
        if refund is not None:
            return refund
    raise RefundInProgress(
        "Other refunds of this order kept being reserved at the same time; try again.", orderId=order_id
    )


def _payment_row(order_id: str) -> Payment | None:
    """The payment as it is now: what the reserve's version check compares against."""
    return Payment.objects.filter(order_id=order_id).first()


def _remaining(payment: Payment | None) -> int:
    """What is left to refund: the amount paid less the numbered refunds not failed, or less what Stripe says
    is refunded if that is more (a refund made in Stripe's dashboard, or by a compensation)."""
    if payment is None or payment.status != "succeeded":
        return 0
    return max(0, payment.amount - max(payment.refund_reserved, payment.amount_refunded))


def _exceeds_detail(payment: Payment | None, asked: int, remaining: int) -> str:
    if payment is None or payment.status != "succeeded":
        return "The order has no captured payment to refund."
    if remaining == 0:
        return "The payment has been refunded in full already."
    return (
        f"A refund of {asked} ({money_format(asked, payment.currency)}) is more than the "
        f"{money_format(remaining, payment.currency)} left to refund."
    )


_RESERVE_SQL = f"""
WITH p AS (
    UPDATE {Payment._meta.db_table}
       SET refund_seq = refund_seq + 1, refund_reserved = refund_reserved + %(amount)s, updated = %(now)s
     WHERE id = %(payment)s AND refund_seq = %(seq)s AND status = 'succeeded'
       AND GREATEST(refund_reserved, amount_refunded) + %(amount)s <= amount
 RETURNING id, refund_seq
)
INSERT INTO {Refund._meta.db_table}
    (payment_id, seq, amount, status, idempotency_key, stripe_refund_id, failure_reason, created, updated)
SELECT p.id, p.refund_seq, %(amount)s, 'requested', %(key)s, NULL, '', %(now)s, %(now)s FROM p
RETURNING id
"""


def _reserve(payment: Payment, *, amount: int) -> Refund | None:
    """The reserve statement (see the module docstring); None when the version check lost."""
    seq = payment.refund_seq + 1
    params = {
        "amount": amount,
        "now": timezone.now(),
        "payment": payment.pk,
        "seq": payment.refund_seq,
        "key": refund_key(order_id=payment.order_id, seq=seq),
    }
    with connection.cursor() as cursor:
        cursor.execute(_RESERVE_SQL, params)
        row = cursor.fetchone()
    return None if row is None else Refund.objects.select_related("payment").get(pk=row[0])


def _in_progress(order_id: str, refund: Refund) -> RefundInProgress:
    return RefundInProgress(
        f"Refund #{refund.seq} of this order ({money_format(refund.amount, refund.payment.currency)}) has not been "
        "answered by Stripe yet; it is finished before another one starts.",
        orderId=order_id,
        refundSeq=refund.seq,
    )


def refunds_unfinished(*, order_id: str) -> list[Refund]:
    """The order's numbered refunds that Stripe has not answered yet (``requested``), oldest first."""
    return list(
        Refund.objects.filter(payment__order_id=order_id, status=S.REQUESTED).select_related("payment").order_by("seq")
    )


def refund_execute(*, refund_id: int) -> Refund:
    """Ask Stripe for the reserved refund (again, after a crash or a lost answer: same key, same request).

    Returns the settled row (``succeeded`` or ``pending``). Raises PaymentTransientError (the outcome is
    unknown; the row stays ``requested`` for the next call), :class:`RefundFailed` (Stripe refused it or it
    failed: its amount is free again) or PaymentProviderBusy (nothing was sent: likewise freed).
    """
    refund = Refund.objects.select_related("payment").get(pk=refund_id)
    if refund.status != S.REQUESTED:
        return refund
    payment = refund.payment
    try:
        result = refund_create(
            order_id=payment.order_id, intent_id=payment.intent_id, amount=refund.amount, seq=refund.seq
        )
    except PaymentProviderBusy:
        _settle(refund, S.FAILED, failure_reason="not sent: the Stripe budget was spent")
        raise
    except PaymentPermanentError as exc:
        _settle(refund, S.FAILED, failure_reason=str(exc))
        _learn_refunded(payment)
        raise RefundFailed(
            str(exc), orderId=payment.order_id, refundSeq=refund.seq, stripeCode=exc.stripe_code
        ) from exc
    refund = _settle(
        refund, _status(result.status), stripe_refund_id=result.refund_id, failure_reason=result.failure_reason
    )
    if refund.status in _GIVES_BACK:
        raise RefundFailed(
            f"Stripe answered refund #{refund.seq} with {result.status} ({result.failure_reason or 'no reason'}).",
            orderId=payment.order_id,
            refundSeq=refund.seq,
            stripeCode=result.failure_reason,
        )
    return refund


def _learn_refunded(payment: Payment) -> None:
    """After a refusal (most often: refunded elsewhere already, e.g. in Stripe's dashboard), take Stripe's
    refunded amount, so what is left is right for the next refund even before the webhook comes."""
    try:
        payment_sync_from_intent(intent=payment_intent_retrieve(intent_id=payment.intent_id))
    except (PaymentTransientError, PaymentProviderBusy, PaymentPermanentError):
        pass  # the webhook (charge.refunded) or the reconciliation brings it


def refund_sync(*, result: RefundResult) -> Refund | None:
    """Bring our row of a refund to its state at Stripe (a webhook re-fetched it). None when the refund is
    not one of our numbered ones (made in the dashboard, or a compensation's full refund)."""
    refund = Refund.objects.select_related("payment").filter(stripe_refund_id=result.refund_id).first()
    if refund is None and result.seq is not None and result.metadata.get("order_id"):
        refund = (
            Refund.objects.select_related("payment")
            .filter(payment__order_id=result.metadata["order_id"], seq=result.seq)
            .first()
        )
    if refund is None:
        return None
    return _settle(
        refund, _status(result.status), stripe_refund_id=result.refund_id, failure_reason=result.failure_reason
    )


def _status(stripe_status: str) -> str:
    """Stripe's refund status as ours (``requires_action``: the customer must act; still pending for us)."""
    return stripe_status if stripe_status in _RANK else S.PENDING


_GIVE_BACK_SQL = f"""
WITH r AS (
    UPDATE {Refund._meta.db_table}
       SET status = %(status)s, stripe_refund_id = COALESCE(stripe_refund_id, %(stripe_id)s),
           failure_reason = %(reason)s, updated = %(now)s
     WHERE id = %(refund)s AND status = ANY(%(before)s)
 RETURNING payment_id, amount
), p AS (
    UPDATE {Payment._meta.db_table} AS pay
       SET refund_reserved = pay.refund_reserved - r.amount, updated = %(now)s
      FROM r WHERE pay.id = r.payment_id
)
SELECT count(*) FROM r
"""


def _settle(
    refund: Refund, status: str, *, stripe_refund_id: str | None = None, failure_reason: str | None = None
) -> Refund:
    """Move the row to ``status`` if that is further along than where it is (stale news changes nothing);
    a failure gives the amount back in the same statement, so it is given back once."""
    before = [s.value for s, rank in _RANK.items() if rank < _RANK[status]]
    now = timezone.now()
    if status in _GIVES_BACK:
        params = {
            "status": status,
            "stripe_id": stripe_refund_id,
            "reason": (failure_reason or "")[:255],
            "now": now,
            "refund": refund.pk,
            "before": before,
        }
        with connection.cursor() as cursor:
            cursor.execute(_GIVE_BACK_SQL, params)
    else:
        fields = {"status": status, "updated": now}
        if stripe_refund_id:
            fields["stripe_refund_id"] = stripe_refund_id
        Refund.objects.filter(pk=refund.pk, status__in=before).update(**fields)
    refund.refresh_from_db()
    return refund
