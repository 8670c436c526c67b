"""The order in admin: one page per order that reads top to bottom (the order and its money, payment and
refunds, stock, Stripe's webhook events, the outbound deliveries, the saga log), the refund and
cancel-after-payment forms, and the list of what staff did.

Nothing here edits state by hand: the page is read-only and the forms call the services
(orders/refunds.py, orders/cancellation.py). Other apps are read through their selectors, as plain rows;
the tables are drawn by orders/admin_display.py. orders/admin.py imports this module, which registers the
pages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from cartflow.admin import ReadOnlyAdminMixin, money_column
from cartflow.money import currency_exponent, money_format
from cartflow.problems import DomainError
from inventory.selectors import reservations_of_holder
from orders import admin_display as show
from orders.cancellation import cancel_summary, order_cancel_paid
from orders.models import Order, OrderOperation, WebhookDelivery
from orders.refunds import order_refund, refund_summary
from orders.selectors import order_payment_status
from payments.selectors import payment_get, refunds_of_order, webhook_events_of_intent


def _left_to_refund(order: Order) -> int:
    return max(0, order.total - order.amount_refunded)


class RefundForm(forms.Form):
    amount = forms.IntegerField(required=False, min_value=1)
    reason = forms.CharField(max_length=500, help_text="Why: kept on the order with your name.")

    def __init__(self, *args: Any, order: Order, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        left, currency = _left_to_refund(order), order.currency
        example = 10 ** currency_exponent(currency)
        self.fields["amount"].help_text = (
            f"In minor units: {example} is {money_format(example, currency)}. Left to refund: "
            f"{money_format(left, currency)} ({left}). Leave empty to refund all that is left."
        )


class CancelForm(forms.Form):
    reason = forms.CharField(max_length=500, help_text="Why: kept on the order with your name.")
    restock = forms.BooleanField(
        required=False, initial=True, label="Put the stock back", help_text="Untick when the goods are not coming back."
    )


@admin.register(Order)
class OrderAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "public_id",
        "status",
        "payment_status",
        "total_",
        "refunded_",
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
    fieldsets = (
        (
            "Order and money",
            {
                "fields": (
                    ("public_id", "status"),
                    "money",
                    ("total_", "subtotal_", "refunded_"),
                    ("email", "user"),
                    ("created_at", "updated_at", "flagged_for_review"),
                    "lines",
                )
            },
        ),
        ("Payment and refunds", {"fields": ("payment", "refunds", "operations")}),
        ("Stock (reservations)", {"fields": ("reservations",)}),
        ("Stripe webhook events", {"fields": ("webhook_events",)}),
        ("Outbound webhook deliveries", {"fields": ("deliveries",)}),
        ("Checkout and saga log", {"fields": ("checkout", "saga_log")}),
        (
            "As stored",
            {
                "classes": ("collapse",),
                "fields": ("currency", "payment_status", "payment_intent_id", "cart_key", "cart_token_hash"),
            },
        ),
    )
    readonly_fields = flatten_fieldsets(fieldsets)
    actions = ["refund", "cancel_after_payment"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("saga")

    def get_urls(self):  # noqa: ANN201
        views = [
            path("<path:object_id>/refund/", self.admin_site.admin_view(self.refund_view), name="orders_order_refund"),
            path("<path:object_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="orders_order_cancel"),
        ]
        return views + super().get_urls()

    # --- refund and cancel after payment --------------------------------------------------------------

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
        form = RefundForm(request.POST or None, order=order)
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
            "total": money_format(order.total, order.currency),
            "refunded": money_format(order.amount_refunded, order.currency),
            "left": money_format(_left_to_refund(order), order.currency),
            "form": form,
            "submit": submit,
        }
        return TemplateResponse(request, "admin/orders/order/money_form.html", context)

    # --- list columns ---------------------------------------------------------------------------------

    total_ = money_column("total", "total")
    subtotal_ = money_column("subtotal", "subtotal")
    refunded_ = money_column("amount_refunded", "refunded")

    # --- the order and its money ----------------------------------------------------------------------

    @admin.display(description="money")
    def money(self, obj: Order) -> SafeString:
        links = format_html(
            '<a href="{}">refund…</a> · <a href="{}">cancel after payment…</a>',
            reverse("admin:orders_order_refund", args=[obj.pk]),
            reverse("admin:orders_order_cancel", args=[obj.pk]),
        )
        return format_html(
            "payment <strong>{}</strong>: {} paid, {} refunded, {} left to refund — {}",
            order_payment_status(obj),
            money_format(obj.total, obj.currency),
            money_format(obj.amount_refunded, obj.currency),
            money_format(_left_to_refund(obj), obj.currency),
            links,
        )

    @admin.display(description="lines")
    def lines(self, obj: Order) -> SafeString:
        rows, total = show.capped(obj.lines.order_by("product_id"))
        return show.table(
            ("product", "sku", "name", "unit price", "quantity", "line total"),
            (
                (
                    line.product_id,
                    line.sku,
                    line.name,
                    money_format(line.unit_price, obj.currency),
                    line.quantity,
                    money_format(line.line_total, obj.currency),
                )
                for line in rows
            ),
            total=total,
        )

    # --- payment and refunds --------------------------------------------------------------------------

    def _payment(self, obj: Order) -> Any:
        """The order's payment row, read once per page (``payment`` and ``refunds`` both show it)."""
        if not hasattr(obj, "_admin_payment"):
            obj._admin_payment = payment_get(order_id=obj.public_id)  # type: ignore[attr-defined]
        return obj._admin_payment  # type: ignore[attr-defined]

    @admin.display(description="payment")
    def payment(self, obj: Order) -> SafeString | str:
        payment = self._payment(obj)
        if payment is None:
            return "- (no payment yet)"
        url = reverse("admin:payments_payment_change", args=[payment.pk])
        return format_html(
            "{}: {}, {} (refunded {}){} — every Stripe call and its idempotency key on the payment's page",
            show.link(url, payment.intent_id or "no PaymentIntent"),
            payment.status or "-",
            money_format(payment.amount, payment.currency),
            money_format(payment.amount_refunded, payment.currency),
            mark_safe(", <strong>DISPUTED</strong>") if payment.disputed else "",  # noqa: S308 - a constant
        )

    @admin.display(description="refunds")
    def refunds(self, obj: Order) -> SafeString | str:
        payment = self._payment(obj)
        if payment is None:
            return "none"
        rows = refunds_of_order(order_id=obj.public_id, limit=show.TABLE_CAP)
        return show.table(
            ("refund", "amount", "status", "Stripe refund", "idempotency key", "failure", "asked at (UTC)"),
            (
                (
                    f"#{r.seq}",
                    money_format(r.amount, payment.currency),
                    r.status,
                    show.code(r.stripe_refund_id),
                    show.code(r.idempotency_key),
                    r.failure_reason or "-",
                    show.when(r.created),
                )
                for r in rows
            ),
            total=max(payment.refund_seq, len(rows)),  # refunds are numbered 1..refund_seq per payment
            full_list=show.link(reverse("admin:payments_payment_change", args=[payment.pk]), "the payment's page"),
        )

    @admin.display(description="operations by staff")
    def operations(self, obj: Order) -> SafeString:
        rows, total = show.capped(obj.operations.order_by("created_at", "id"))
        return show.table(
            ("at (UTC)", "what", "who", "why", "amount", "refund", "restock", "status", "outcome"),
            (
                (
                    show.when(op.created_at),
                    op.kind,
                    op.actor_label,
                    op.reason or "-",
                    money_format(op.amount, obj.currency) if op.amount is not None else "-",
                    f"#{op.refund_seq}" if op.refund_seq else "-",
                    {True: "yes", False: "no"}.get(op.restock, "-"),
                    op.status,
                    op.outcome or "-",
                )
                for op in rows
            ),
            total=total,
            full_list=show.changelist_link("orders_orderoperation", "every operation on this order", q=obj.public_id),
        )

    # --- stock, webhook events, outbound deliveries, saga log ----------------------------------------

    @admin.display(description="reservations")
    def reservations(self, obj: Order) -> SafeString | str:
        saga = getattr(obj, "saga", None)
        if saga is None:
            return "- (no checkout)"
        rows, total = reservations_of_holder(holder=saga.public_id, limit=show.TABLE_CAP)
        return show.table(
            ("product", "sku", "quantity", "status", "expires at (UTC)", "last change (UTC)"),
            (
                (r.product_id, r.sku, r.quantity, r.status, show.when(r.expires_at), show.when(r.updated_at))
                for r in rows
            ),
            total=total,
            full_list=show.reservations_link(saga.public_id),
        )

    @admin.display(description="webhook events")
    def webhook_events(self, obj: Order) -> SafeString | str:
        if not obj.payment_intent_id:
            return show.webhooks_link(obj.payment_intent_id)
        rows, total = webhook_events_of_intent(intent_id=obj.payment_intent_id, limit=show.TABLE_CAP)
        return show.table(
            ("event", "type", "received (UTC)", "processed (UTC)", "status", "attempts", "last error"),
            (
                (
                    show.link(reverse("admin:payments_webhookevent_change", args=[e.id]), e.event_id),
                    e.type,
                    show.when(e.received_at),
                    show.when(e.processed_at),
                    e.status,
                    e.attempts,
                    e.last_error[:200] or "-",
                )
                for e in rows
            ),
            total=total,
            full_list=show.webhooks_link(obj.payment_intent_id),
        )

    @admin.display(description="deliveries")
    def deliveries(self, obj: Order) -> SafeString:
        qs = WebhookDelivery.objects.filter(event__order=obj).select_related("event").order_by("id")
        rows, total = show.capped(qs)
        return show.table(
            ("event", "type", "endpoint", "status", "attempts", "last answer", "next retry (UTC)", "delivered (UTC)"),
            (
                (
                    show.link(reverse("admin:orders_outboundevent_change", args=[d.event_id]), d.event.public_id),
                    d.event.type,
                    show.link(reverse("admin:orders_webhookdelivery_change", args=[d.pk]), d.url),
                    d.status,
                    d.attempts,
                    d.last_status_code or (d.last_error[:120] if d.last_error else "-"),
                    show.when(d.next_attempt_at) if d.status == WebhookDelivery.Status.PENDING else "-",
                    show.when(d.delivered_at),
                )
                for d in rows
            ),
            total=total,
            full_list=show.changelist_link("orders_webhookdelivery", "every delivery of this order", q=obj.public_id),
        )

    @admin.display(description="checkout")
    def checkout(self, obj: Order) -> SafeString | str:
        saga = getattr(obj, "saga", None)
        if saga is None:
            return "-"
        url = reverse("admin:orders_checkoutsaga_change", args=[saga.pk])
        return format_html("{} ({})", show.link(url, saga.public_id), saga.state)

    @admin.display(description="saga log")
    def saga_log(self, obj: Order) -> SafeString | str:
        saga = getattr(obj, "saga", None)
        if saga is None:
            return "-"
        rows, total = show.capped(saga.log.order_by("at", "id"))
        return show.table(
            ("at (UTC)", "step", "outcome", "details"),
            (
                (show.when(s.at), s.step, s.outcome, show.code(json.dumps(s.details, default=str) if s.details else ""))
                for s in rows
            ),
            total=total,
            full_list=show.link(reverse("admin:orders_checkoutsaga_change", args=[saga.pk]), "the checkout's page"),
        )


@admin.register(OrderOperation)
class OrderOperationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "order", "kind", "actor_label", "amount_", "restock", "status", "finished_at")
    list_filter = ("kind", "status")
    search_fields = ("=order__public_id", "actor_label", "reason")
    list_select_related = ("order",)
    fields = readonly_fields = [
        "amount_" if f.name == "amount" else f.name for f in OrderOperation._meta.fields if f.name != "id"
    ]

    @admin.display(description="amount", ordering="amount")
    def amount_(self, obj: OrderOperation) -> str:
        return money_format(obj.amount, obj.order.currency) if obj.amount is not None else "-"
