"""Operations views: orders (lines, payment, saga log, links to reservations and webhook events) and
sagas (stuck filter, resume / compensate through orders.saga). Nothing here edits state by hand:
every field that the saga owns is read-only, and the actions call the saga's own services."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from cartflow.admin import ReadOnlyAdminMixin
from orders.models import CheckoutSaga, Order, OrderLine, Outbox, SagaStep
from orders.saga import driver as saga_services
from payments.selectors import payment_get

# --- links to the other apps' admin pages (by URL: orders never reads their models) --------------------


def _changelist_link(model: str, label: str, **filters: str) -> SafeString:
    url = reverse(f"admin:{model}_changelist") + "?" + urlencode(filters)
    return format_html('<a href="{}">{}</a>', url, label)


def _reservations_link(checkout_id: str) -> SafeString:
    return _changelist_link("inventory_reservation", f"reservations held by {checkout_id}", holder=checkout_id)


def _webhooks_link(intent_id: str) -> str:
    if not intent_id:
        return "- (no PaymentIntent yet)"
    return _changelist_link("payments_webhookevent", f"webhook events of {intent_id}", intent_id=intent_id)


def _saga_log_table(saga: CheckoutSaga | None) -> SafeString | str:
    if saga is None:
        return "-"
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
        ((s.at.isoformat(timespec="seconds"), s.step, s.outcome, s.details or "") for s in saga.log.all()),
    )
    return format_html(
        "<table><thead><tr><th>at (UTC)</th><th>step</th><th>outcome</th><th>details</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        rows,
    )


# --- orders ------------------------------------------------------------------------------------------


class OrderLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = OrderLine
    extra = 0
    fields = ("product", "sku", "name", "unit_price", "quantity", "line_total")
    readonly_fields = fields


@admin.register(Order)
class OrderAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "public_id",
        "status",
        "payment_status",
        "total",
        "currency",
        "email",
        "payment_intent_id",
        "flagged_for_review",
        "created_at",
    )
    list_filter = ("status", "payment_status", "flagged_for_review", "currency")
    # Order id, checkout id, email, or the PaymentIntent id (``pi_...``) an operator copied from Stripe.
    search_fields = ("=public_id", "=saga__public_id", "email", "=payment_intent_id")
    search_help_text = "Order id, checkout id, e-mail, or PaymentIntent id (pi_…)."
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Order._meta.fields] + [
        "checkout",
        "payment",
        "reservations",
        "webhook_events",
        "saga_log",
    ]
    inlines = [OrderLineInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("saga")

    @admin.display(description="checkout")
    def checkout(self, obj: Order) -> SafeString | str:
        saga = getattr(obj, "saga", None)
        if saga is None:
            return "-"
        url = reverse("admin:orders_checkoutsaga_change", args=[saga.pk])
        return format_html('<a href="{}">{}</a> ({})', url, saga.public_id, saga.state)

    @admin.display(description="payment")
    def payment(self, obj: Order) -> SafeString | str:
        payment = payment_get(order_id=obj.public_id)
        if payment is None:
            return "-"
        url = reverse("admin:payments_payment_change", args=[payment.pk])
        return format_html(
            '<a href="{}">{}</a>: {}, {} {} (refunded {}){}',
            url,
            payment.intent_id or "no PaymentIntent",
            payment.status or "-",
            payment.amount,
            payment.currency,
            payment.amount_refunded,
            ", DISPUTED" if payment.disputed else "",
        )

    @admin.display(description="reservations")
    def reservations(self, obj: Order) -> SafeString | str:
        saga = getattr(obj, "saga", None)
        return _reservations_link(saga.public_id) if saga else "-"

    @admin.display(description="webhook events")
    def webhook_events(self, obj: Order) -> str:
        return _webhooks_link(obj.payment_intent_id)

    @admin.display(description="saga log")
    def saga_log(self, obj: Order) -> SafeString | str:
        return _saga_log_table(getattr(obj, "saga", None))


# --- sagas -------------------------------------------------------------------------------------------


class StuckFilter(admin.SimpleListFilter):
    """What ``recover_sagas`` would pick up (lease lapsed mid-step, hold past expiry, left unattended),
    plus sagas waiting for a human decision."""

    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("yes", "stuck (lease lapsed, past expiry, or needs a human)"),
            ("human", "needs a human"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            stuck = saga_services.sagas_stuck().values("pk")
            return queryset.filter(Q(pk__in=stuck) | Q(requires_human=True))
        if self.value() == "human":
            return queryset.filter(requires_human=True)
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
    readonly_fields = [f.name for f in CheckoutSaga._meta.fields] + ["reservations", "webhook_events"]
    inlines = [SagaStepInline]
    actions = ["resume", "compensate"]
    list_select_related = ("order",)

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
