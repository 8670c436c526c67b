"""Operations views: orders (with lines and saga log) and sagas (stuck filter, resume / compensate)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.utils import timezone

from orders import saga as saga_services
from orders.models import CheckoutSaga, Order, OrderLine, Outbox, SagaStep


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    can_delete = False
    readonly_fields = ("product", "sku", "name", "unit_price", "quantity", "line_total")

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


class SagaStepInline(admin.TabularInline):
    model = SagaStep
    extra = 0
    can_delete = False
    readonly_fields = ("step", "outcome", "at", "details")

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = (
        "public_id",
        "status",
        "payment_status",
        "total",
        "currency",
        "email",
        "flagged_for_review",
        "created_at",
    )
    list_filter = ("status", "payment_status", "flagged_for_review")
    search_fields = ("public_id", "email", "payment_intent_id", "saga__public_id")
    readonly_fields = [f.name for f in Order._meta.fields if f.name != "flagged_for_review"] + ["checkout"]
    inlines = [OrderLineInline]

    @admin.display(description="checkout")
    def checkout(self, obj: Order) -> str:
        saga = getattr(obj, "saga", None)
        return f"{saga.public_id} ({saga.state})" if saga else "-"


class StuckFilter(admin.SimpleListFilter):
    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "stuck (lease lapsed or past expiry)"), ("human", "needs a human")]

    def queryset(self, request: Any, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            now = timezone.now()
            return queryset.exclude(state__in=CheckoutSaga.TERMINAL).filter(
                Q(lease_owner__gt="", lease_expires_at__lt=now) | Q(expires_at__lt=now)
            )
        if self.value() == "human":
            return queryset.filter(requires_human=True)
        return queryset


@admin.register(CheckoutSaga)
class CheckoutSagaAdmin(admin.ModelAdmin):
    list_display = (
        "public_id",
        "state",
        "step",
        "step_status",
        "compensate_to",
        "attempt",
        "expires_at",
        "lease_expires_at",
        "updated_at",
    )
    list_filter = (StuckFilter, "state", "step_status")
    search_fields = ("public_id", "order__public_id", "payment_intent_id", "cart_key", "email")
    readonly_fields = [f.name for f in CheckoutSaga._meta.fields]
    inlines = [SagaStepInline]
    actions = ["resume", "compensate"]

    def has_add_permission(self, request: Any) -> bool:
        return False

    @admin.action(description="Resume (finish or compensate from what was persisted)")
    def resume(self, request: Any, queryset: QuerySet) -> None:
        self._each(request, queryset, lambda pk: saga_services.saga_resume(saga_id=pk))

    @admin.action(description="Compensate (release stock, cancel or refund the payment)")
    def compensate(self, request: Any, queryset: QuerySet) -> None:
        self._each(request, queryset, lambda pk: saga_services.saga_compensate(saga_id=pk))

    def _each(self, request: Any, queryset: QuerySet, fn: Any) -> None:
        for saga in queryset:
            try:
                done = fn(saga.pk)
                self.message_user(request, f"{saga.public_id}: now {done.state}")
            except Exception as exc:  # noqa: BLE001 - report each failure and go on
                self.message_user(request, f"{saga.public_id}: {exc}", level=messages.ERROR)


@admin.register(Outbox)
class OutboxAdmin(admin.ModelAdmin):
    list_display = ("id", "event_type", "created_at", "processed_at", "attempts")
    list_filter = ("event_type", ("processed_at", admin.EmptyFieldListFilter))
    readonly_fields = ("event_type", "payload", "created_at", "processed_at", "attempts", "last_error")
