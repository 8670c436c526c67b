"""Operations views. The order pages (one screen per order, the refund and cancel-after-payment forms, what
staff did) are in orders/admin_order.py, the outbound webhook pages in orders/outbound/admin.py; both are
registered by importing them here. This module keeps the sagas (stuck filter, resume / compensate through
orders.saga) and the outbox. Nothing here edits state by hand: every field that the saga owns is read-only,
and the actions call the services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from cartflow.admin import ReadOnlyAdminMixin
from cartflow.money import money_format
from orders import admin_order  # noqa: F401 - registers the order pages
from orders.admin_display import reservations_link as _reservations_link
from orders.admin_display import table as _table
from orders.admin_display import webhooks_link as _webhooks_link
from orders.models import CheckoutSaga, Outbox, SagaStep
from orders.outbound import admin as outbound_admin  # noqa: F401 - registers the outbound webhook pages
from orders.saga import driver as saga_services
from orders.saga import stuck as saga_stuck

# --- sagas -------------------------------------------------------------------------------------------


class StuckFilter(admin.SimpleListFilter):
    """What ``recover_sagas`` would pick up (lease lapsed mid-step, hold past expiry, a charge whose outcome is
    unknown, left half-way), sagas whose PaymentIntent has a parked webhook event, and sagas waiting for a
    human decision: all of them, or those stuck for one reason (orders/saga/stuck.py)."""

    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "stuck (any reason)"), *saga_stuck.REASONS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = "needs_human" if self.value() == "human" else self.value()  # "human": the filter's old name
        if value == "yes":
            return queryset.filter(pk__in=saga_stuck.sagas_needing_attention().values("pk"))
        if value in dict(saga_stuck.REASONS):
            return queryset.filter(pk__in=saga_stuck.sagas_stuck_for(value))
        return queryset


class SagaStepInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = SagaStep
    extra = 0
    fields = ("at", "step", "outcome", "details")
    readonly_fields = fields
    ordering = ("at", "id")


@admin.register(CheckoutSaga)
class CheckoutSagaAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "public_id",
        "state",
        "step",
        "step_status",
        "why_stuck",
        "stuck_since",
        "compensate_to",
        "requires_human",
        "last_error_code",
        "expires_at",
        "lease_expires_at",
        "updated_at",
    )
    list_filter = (StuckFilter, "state", "step_status", "requires_human")
    search_fields = ("=public_id", "=order__public_id", "=payment_intent_id", "=client_key", "email")
    search_help_text = "Checkout id, order id, PaymentIntent id (pi_…), client (user:<id> or addr:<address>) or e-mail."
    readonly_fields = ["basket"] + [f.name for f in CheckoutSaga._meta.fields] + ["reservations", "webhook_events"]
    inlines = [SagaStepInline]
    actions = ["resume", "compensate"]
    list_select_related = ("order",)

    def get_changelist_instance(self, request: HttpRequest):  # noqa: ANN201
        """Why each saga on the page is stuck, read for the whole page at once (two queries)."""
        changelist = super().get_changelist_instance(request)
        reasons = saga_stuck.stuck_reasons(changelist.result_list)
        for saga in changelist.result_list:
            saga.stuck_reason = reasons.get(saga.pk)
        return changelist

    @admin.display(description="why stuck")
    def why_stuck(self, obj: CheckoutSaga) -> str:
        reason = getattr(obj, "stuck_reason", None)
        return reason.text if reason else "-"

    @admin.display(description="stuck since (UTC)")
    def stuck_since(self, obj: CheckoutSaga) -> str:
        reason = getattr(obj, "stuck_reason", None)
        return reason.since.isoformat(timespec="seconds") if reason else "-"

    @admin.display(description="lines (as priced at start)")
    def basket(self, obj: CheckoutSaga) -> SafeString:
        """The ``lines`` JSON below, with its money in the checkout's currency."""
        lines = obj.lines or []
        rows = [
            (
                line.get("sku", ""),
                line.get("name", ""),
                money_format(line.get("unit_price"), obj.currency),
                line.get("quantity", ""),
                money_format(line.get("unit_price", 0) * line.get("quantity", 0), obj.currency),
            )
            for line in lines
        ]
        return _table(("SKU", "name", "unit price", "quantity", "line total"), rows, total=len(rows))

    @admin.display(description="reservations")
    def reservations(self, obj: CheckoutSaga) -> SafeString:
        return _reservations_link(obj.public_id)

    @admin.display(description="webhook events")
    def webhook_events(self, obj: CheckoutSaga) -> str:
        return _webhooks_link(obj.payment_intent_id)

    def has_drive_permission(self, request: HttpRequest) -> bool:
        """Who may resume or compensate: staff allowed to change sagas (the pages stay read-only)."""
        return request.user.has_perm("orders.change_checkoutsaga")

    @admin.action(description="Resume (finish or compensate from what was persisted)", permissions=["drive"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, lambda pk: saga_services.saga_resume(saga_id=pk))

    @admin.action(description="Compensate (release stock, cancel or refund the payment)", permissions=["drive"])
    def compensate(self, request: HttpRequest, queryset: QuerySet) -> None:
        reason = f"compensated by {request.user.get_username()} in admin"
        self._each(request, queryset, lambda pk: saga_services.saga_compensate(saga_id=pk, reason=reason))

    def _each(self, request: HttpRequest, queryset: QuerySet, fn: Any) -> None:
        for saga in queryset.order_by("pk"):
            try:
                done = fn(saga.pk)
            except Exception as exc:  # noqa: BLE001 - report each failure and go on with the others
                self.message_user(request, f"{saga.public_id}: {exc}", level=messages.ERROR)
            else:
                self.message_user(request, f"{saga.public_id}: now {done.state}", level=messages.SUCCESS)


# --- outbox ------------------------------------------------------------------------------------------


@admin.register(Outbox)
class OutboxAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "event_type", "created_at", "processed_at", "attempts")
    list_filter = ("event_type", ("processed_at", admin.EmptyFieldListFilter))
    readonly_fields = ("event_type", "payload", "created_at", "processed_at", "attempts", "last_error")
