"""Outbound webhooks in admin: endpoints (staff manage them), events and deliveries (read-only, with every
attempt), and "re-send", which calls :func:`orders.outbound.delivery.webhook_delivery_resend`.

orders/admin.py imports this module, which registers the pages.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from cartflow.admin import ReadOnlyAdminMixin
from orders.models import EVENT_TYPES, OutboundEvent, WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from orders.outbound.delivery import webhook_delivery_resend


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https", help_text="Where the events are POSTed.")
    event_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in EVENT_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every type.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("url", "active", "event_types", "secret", "description")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Configuration, not state: staff add, change and deactivate endpoints here."""

    form = WebhookEndpointForm
    list_display = ("url", "active", "types", "description", "created_at")
    list_filter = ("active",)
    search_fields = ("url", "description")

    @admin.display(description="event types")
    def types(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.event_types) or "all"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        configured = list(settings.CARTFLOW_WEBHOOK_ENDPOINTS)
        if configured and request.method == "GET":
            self.message_user(
                request,
                f"Also receiving every event (CARTFLOW_WEBHOOK_ENDPOINTS): {', '.join(configured)}",
                level=messages.INFO,
            )
        return super().changelist_view(request, extra_context)


class WebhookDeliveryInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    fields = ("delivery", "status", "attempts", "last_status_code", "next_attempt_at", "delivered_at")
    readonly_fields = fields
    show_change_link = False

    @admin.display(description="delivery")
    def delivery(self, obj: WebhookDelivery) -> SafeString:
        url = reverse("admin:orders_webhookdelivery_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.url)


@admin.register(OutboundEvent)
class OutboundEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("public_id", "type", "order", "created_at", "fanned_out_at")
    list_filter = ("type", ("fanned_out_at", admin.EmptyFieldListFilter))
    search_fields = ("=public_id", "=order__public_id")
    search_help_text = "Event id (evt_…) or order id."
    list_select_related = ("order",)
    fields = readonly_fields = ("public_id", "type", "order", "key", "created_at", "fanned_out_at", "data", "body")
    inlines = [WebhookDeliveryInline]


class WebhookDeliveryAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WebhookDeliveryAttempt
    extra = 0
    fields = ("number", "at", "signed_at", "duration_ms", "status_code", "error", "response_head")
    readonly_fields = fields
    ordering = ("number",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "event_id_",
        "event_type",
        "order",
        "url",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", "event__type")
    search_fields = ("=event__public_id", "=event__order__public_id", "url")
    search_help_text = "Event id (evt_…), order id, or endpoint URL."
    list_select_related = ("event", "event__order")
    fields = readonly_fields = (
        "event_link",
        "url",
        "endpoint",
        "status",
        "attempts",
        "next_attempt_at",
        "give_up_at",
        "last_status_code",
        "last_error",
        "delivered_at",
        "created_at",
    )
    inlines = [WebhookDeliveryAttemptInline]
    actions = ["resend"]

    @admin.display(description="event", ordering="event__public_id")
    def event_id_(self, obj: WebhookDelivery) -> str:
        return obj.event.public_id

    @admin.display(description="type", ordering="event__type")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    @admin.display(description="order")
    def order(self, obj: WebhookDelivery) -> str:
        return obj.event.order.public_id

    @admin.display(description="event")
    def event_link(self, obj: WebhookDelivery) -> SafeString:
        url = reverse("admin:orders_outboundevent_change", args=[obj.event_id])
        return format_html('<a href="{}">{} ({})</a>', url, obj.event.public_id, obj.event.type)

    def has_resend_permission(self, request: HttpRequest) -> bool:
        """Who may re-send: staff allowed to change deliveries (the pages stay read-only)."""
        return request.user.has_perm("orders.change_webhookdelivery")

    @admin.action(description="Re-send (same event and id, signed afresh)", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet) -> None:
        by = request.user.get_username()
        count = sum(webhook_delivery_resend(delivery_id=pk, by=by) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} deliveries queued to be sent again.", level=messages.SUCCESS)
