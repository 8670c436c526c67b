"""Payment invariants for `check_invariants` (docs/architecture.md, "Invariants")."""

from __future__ import annotations

from django.db.models import F, Q, Sum

from cartflow.invariants import invariant
from payments.models import Payment, Refund


@invariant("payments: refunded <= paid")
def refunded_within_paid() -> list[str]:
    """Neither what Stripe says is refunded nor what the numbered refunds took is more than the amount paid
    (the second is also a CHECK constraint; this catches a dropped one)."""
    over = Payment.objects.filter(Q(amount_refunded__gt=F("amount")) | Q(refund_reserved__gt=F("amount")))
    return [
        f"order {p.order_id}: paid {p.amount} {p.currency}, refunded {p.amount_refunded}, "
        f"taken by refunds {p.refund_reserved}"
        for p in over
    ]


@invariant("payments: a payment's taken refund amount is the sum of its refunds that have not failed")
def reserved_matches_refunds() -> list[str]:
    live = (
        Refund.objects.exclude(status__in=[Refund.Status.FAILED, Refund.Status.CANCELED])
        .values("payment_id")
        .annotate(total=Sum("amount"))
    )
    totals = {row["payment_id"]: row["total"] for row in live}
    rows = Payment.objects.filter(Q(refund_reserved__gt=0) | Q(pk__in=list(totals)))
    return [
        f"order {p.order_id}: refund_reserved {p.refund_reserved}, refunds not failed {totals.get(p.pk, 0)}"
        for p in rows.only("pk", "order_id", "refund_reserved")
        if p.refund_reserved != totals.get(p.pk, 0)
    ]
