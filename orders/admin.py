"""Operations views: orders (lines, payment, refunds and what staff did, saga log, links to reservations and
webhook events; refund and cancel-after-payment forms) and sagas (stuck filter, resume / compensate through
orders.saga). Nothing here edits state by hand: every field that the saga owns is read-only, and the
actions and forms call the services (orders/refunds.py, orders/cancellation.py, orders/saga/)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from cartflow.admin import ReadOnlyAdminMixin
from cartflow.problems import DomainError
from orders.cancellation import cancel_summary, order_cancel_paid
from orders.models import CheckoutSaga, Order, OrderLine, OrderOperation, Outbox, SagaStep
from orders.outbound import admin as outbound_admin  # noqa: F401 - registers the outbound webhook pages
from orders.refunds import order_refund, refund_summary
from orders.saga import driver as saga_services
from orders.saga import stuck as saga_stuck
from orders.selectors import order_payment_status
from payments.selectors import payment_get, refunds_of_order

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


class OrderOperationInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Refunds and the cancellation staff asked for: who, why, and what came of it."""

    model = OrderOperation
    extra = 0
    fields = ("created_at", "kind", "actor_label", "reason", "amount", "refund_seq", "restock", "status", "outcome")
    readonly_fields = fields
    verbose_name = "operation by staff"
    verbose_name_plural = "operations by staff (refunds, cancellation)"


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
        "money",
        "checkout",
        "payment",
        "refunds",
        "reservations",
        "webhook_events",
        "saga_log",
    ]
    inlines = [OrderLineInline, OrderOperationInline]
    actions = ["refund", "cancel_after_payment"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("saga")

    def get_urls(self):  # noqa: ANN201
        views = [
            path("<path:object_id>/refund/", self.admin_site.admin_view(self.refund_view), name="orders_order_refund"),
            path("<path:object_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="orders_order_cancel"),
        ]
        return views + super().get_urls()

    def has_money_permission(self, request: HttpRequest) -> bool:
        """Who may refund or cancel a paid order: staff allowed to change orders (the pages stay read-only)."""
        return request.user.has_perm("orders.change_order")

    @admin.action(description="Refund… (all that is left, or an amount)", permissions=["money"])
    def refund(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._one_order_form(request, queryset, "admin:orders_order_refund")

    @admin.action(description="Cancel after payment… (refund or void, put the stock back)", permissions=["money"])
    def cancel_after_payment(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._one_order_form(request, queryset, "admin:orders_order_cancel")

    def _one_order_form(self, request: HttpRequest, queryset: QuerySet, url_name: str) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select one order: the form asks about that order.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse(url_name, args=[queryset.get().pk]))

    def refund_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The refund form (amount, reason); its submit calls ``order_refund``."""
        order = self._order_for_money(request, object_id)
        form = RefundForm(request.POST or None)
        done = self._submitted(
            request,
            order,
            form,
            lambda data: refund_summary(
                order_refund(order_id=order.public_id, amount=data["amount"], reason=data["reason"], actor=request.user)
            ),
        )
        return done or self._money_form(request, order, form, "Refund", "Refund")

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The cancel-after-payment form (reason, put the stock back); its submit calls ``order_cancel_paid``."""
        order = self._order_for_money(request, object_id)
        form = CancelForm(request.POST or None)
        done = self._submitted(
            request,
            order,
            form,
            lambda data: cancel_summary(
                order_cancel_paid(
                    order_id=order.public_id, restock=data["restock"], reason=data["reason"], actor=request.user
                )
            ),
        )
        return done or self._money_form(request, order, form, "Cancel after payment", "Cancel the order")

    def _submitted(
        self, request: HttpRequest, order: Order, form: forms.Form, run: Callable[[dict[str, Any]], str]
    ) -> HttpResponse | None:
        """A valid POST runs the service (``run`` returns what to tell staff) and goes back to the order; a
        refusal (a DomainError, nothing changed) becomes the form's error. None: show the form (again)."""
        if request.method != "POST" or not form.is_valid():
            return None
        try:
            summary = run(form.cleaned_data)
        except DomainError as exc:
            form.add_error(None, exc.detail)
            return None
        self.message_user(request, summary, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:orders_order_change", args=[order.pk]))

    def _order_for_money(self, request: HttpRequest, object_id: str) -> Order:
        if not self.has_money_permission(request):
            raise PermissionDenied
        return get_object_or_404(Order, pk=object_id)

    def _money_form(self, request: HttpRequest, order: Order, form: forms.Form, verb: str, submit: str) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb}: order {order.public_id}",
            "opts": self.model._meta,
            "original": order,
            "order": order,
            "payment_status": order_payment_status(order),
            "left": max(0, order.total - order.amount_refunded),
            "form": form,
            "submit": submit,
        }
        return TemplateResponse(request, "admin/orders/order/money_form.html", context)

    @admin.display(description="money")
    def money(self, obj: Order) -> SafeString:
        links = format_html(
            '<a href="{}">refund…</a> · <a href="{}">cancel after payment…</a>',
            reverse("admin:orders_order_refund", args=[obj.pk]),
            reverse("admin:orders_order_cancel", args=[obj.pk]),
        )
        return format_html(
            "{}: paid {} {}, refunded {} — {}",
            order_payment_status(obj),
            obj.total,
            obj.currency,
            obj.amount_refunded,
            links,
        )

    @admin.display(description="refunds")
    def refunds(self, obj: Order) -> SafeString | str:
        rows = refunds_of_order(order_id=obj.public_id)
        if not rows:
            return "-"
        body = format_html_join(
            "",
            "<tr><td>#{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
            ((r.seq, r.amount, r.status, r.stripe_refund_id or "-", r.idempotency_key, r.failure_reason) for r in rows),
        )
        return format_html(
            "<table><thead><tr><th>refund</th><th>amount</th><th>status</th><th>Stripe refund</th>"
            "<th>idempotency key</th><th>failure</th></tr></thead><tbody>{}</tbody></table>",
            body,
        )

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


class RefundForm(forms.Form):
    amount = forms.IntegerField(
        required=False, min_value=1, help_text="Minor units (cents). Leave empty to refund all that is left."
    )
    reason = forms.CharField(max_length=500, help_text="Why: kept on the order with your name.")


class CancelForm(forms.Form):
    reason = forms.CharField(max_length=500, help_text="Why: kept on the order with your name.")
    restock = forms.BooleanField(
        required=False, initial=True, label="Put the stock back", help_text="Untick when the goods are not coming back."
    )


@admin.register(OrderOperation)
class OrderOperationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "order", "kind", "actor_label", "amount", "restock", "status", "finished_at")
    list_filter = ("kind", "status")
    search_fields = ("=order__public_id", "actor_label", "reason")
    list_select_related = ("order",)
    readonly_fields = [f.name for f in OrderOperation._meta.fields]


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
    readonly_fields = [f.name for f in CheckoutSaga._meta.fields] + ["reservations", "webhook_events"]
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
