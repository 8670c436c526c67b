"""Staff views of payments, webhook events and disputes. Read-only: actions go through services."""

from __future__ import annotations

from django.contrib import admin, messages

from cartflow.admin import ReadOnlyAdminMixin, money_column
from cartflow.money import money_format
from payments.models import DisputedPayment, Payment, PaymentAttempt, Refund, WebhookEvent
from payments.reconciliation import payments_reconcile
from payments.webhooks.handlers import webhook_event_process


class PaymentAttemptInline(admin.TabularInline):
    model = PaymentAttempt
    extra = 0
    can_delete = False
    fields = ("at", "operation", "idempotency_key", "outcome", "intent_status", "error_code", "error_message")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False


class RefundInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The numbered refunds (payments/refunds.py); who asked and why is on the order's page."""

    model = Refund
    extra = 0
    fields = ("seq", "amount_", "status", "stripe_refund_id", "idempotency_key", "failure_reason", "created", "updated")
    readonly_fields = fields

    @admin.display(description="amount")
    def amount_(self, obj: Refund) -> str:
        return money_format(obj.amount, obj.payment.currency)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("order_id", "intent_id", "status", "amount_", "refunded_", "disputed", "updated")
    list_filter = ("status", "disputed", "currency")
    search_fields = ("order_id", "checkout_id", "intent_id")
    fields = readonly_fields = (
        "order_id",
        "checkout_id",
        "intent_id",
        "status",
        "amount_",
        "refunded_",
        "reserved_",
        "refund_seq",
        "disputed",
        "order_cancelled_at",
        "created",
        "updated",
    )
    inlines = [RefundInline, PaymentAttemptInline]
    actions = ["reconcile_selected"]

    amount_ = money_column("amount", "amount")
    refunded_ = money_column("amount_refunded", "refunded")
    reserved_ = money_column("refund_reserved", "taken by refunds (asked, pending or succeeded)")

    @admin.action(description="Reconcile with Stripe now")
    def reconcile_selected(self, request, queryset) -> None:  # noqa: ANN001
        report = payments_reconcile(payment_ids=list(queryset.values_list("pk", flat=True)))
        level = messages.WARNING if report.needs_human else messages.SUCCESS
        self.message_user(
            request,
            f"checked {report.checked}: "
            + (
                "; ".join(f"{r.order_id}: {'+'.join(r.drift)} → {'; '.join(r.actions)}" for r in report.rows)
                or "no drift"
            ),
            level,
        )


@admin.register(DisputedPayment)
class DisputeAdmin(PaymentAdmin):
    list_filter = ("status", "currency")

    def get_queryset(self, request):  # noqa: ANN001
        return super().get_queryset(request).filter(disputed=True)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("event_id", "type", "status", "attempts", "intent_id", "received_at", "processed_at")
    list_filter = ("type", "status")
    search_fields = ("event_id", "intent_id")
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]
    actions = ["reprocess"]

    @admin.action(description="Re-process (re-fetch the PaymentIntent from Stripe and apply it)")
    def reprocess(self, request, queryset) -> None:  # noqa: ANN001
        for event_id in queryset.values_list("event_id", flat=True):
            try:
                event = webhook_event_process(event_id=event_id, force=True)
            except Exception as exc:  # shown to staff; the event keeps the error
                self.message_user(request, f"{event_id}: {exc.__class__.__name__}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{event_id}: {event.status}", messages.SUCCESS)
