"""Admin for operations staff. Stock and reservation state change only through inventory.services."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from cartflow.admin import ReadOnlyAdminMixin, money_column
from cartflow.money import money_format
from cartflow.problems import DomainError
from inventory.flashsale import flash_sale_start, flash_sale_stop
from inventory.models import Product, Reservation, Stock, StockAdjustment
from inventory.selectors import product_cache_invalidate
from inventory.services import stock_adjust


class StockInline(admin.StackedInline):
    model = Stock
    can_delete = False
    readonly_fields = ("on_hand", "reserved", "version", "updated_at")
    extra = 0


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("id", "sku", "name", "price_", "active", "flash_sale")
    list_filter = ("active", "flash_sale", "currency")
    search_fields = ("sku", "name")
    readonly_fields = ("price_shown",)
    fields = ("sku", "name", ("price", "currency", "price_shown"), "active", "flash_sale")
    inlines = [StockInline]

    price_ = money_column("price", "price")

    @admin.display(description="that is")
    def price_shown(self, obj: Product) -> str:
        return money_format(obj.price, obj.currency) if obj.pk else "-"

    actions = ["start_flash_sale", "stop_flash_sale"]

    @admin.action(description="Start flash sale (open a token pool of the available stock)")
    def start_flash_sale(self, request, queryset) -> None:  # noqa: ANN001
        for product in queryset:
            state = flash_sale_start(product_id=product.pk)
            self.message_user(request, f"{product.sku}: flash sale on, {state.free} tokens free.", messages.SUCCESS)

    @admin.action(description="Stop flash sale (close the token pool)")
    def stop_flash_sale(self, request, queryset) -> None:  # noqa: ANN001
        for product in queryset:
            flash_sale_stop(product_id=product.pk)
            self.message_user(request, f"{product.sku}: flash sale off.", messages.SUCCESS)

    def save_model(self, request, obj, form, change) -> None:  # noqa: ANN001
        super().save_model(request, obj, form, change)
        if not change:
            Stock.objects.get_or_create(product=obj)
        product_cache_invalidate(product_id=obj.pk)


class StockAdjustForm(forms.Form):
    delta = forms.IntegerField(help_text="Units to add (restock) or, negative, to remove (write-off).")
    reason = forms.CharField(max_length=200)

    def clean_delta(self) -> int:
        delta = self.cleaned_data["delta"]
        if delta == 0:
            raise forms.ValidationError("Enter a non-zero change.")
        return delta


@admin.register(Stock)
class StockAdmin(admin.ModelAdmin):
    list_display = ("product", "on_hand", "reserved", "available_units", "version", "updated_at", "adjust_link")
    search_fields = ("product__sku", "product__name")
    readonly_fields = ("product", "on_hand", "reserved", "version", "updated_at")

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False

    @admin.display(description="available")
    def available_units(self, obj: Stock) -> int:
        return obj.available

    @admin.display(description="adjust")
    def adjust_link(self, obj: Stock) -> str:
        return format_html('<a href="{}">adjust…</a>', reverse("admin:inventory_stock_adjust", args=[obj.pk]))

    def get_urls(self):  # noqa: ANN201
        custom = [
            path(
                "<path:object_id>/adjust/",
                self.admin_site.admin_view(self.adjust_view),
                name="inventory_stock_adjust",
            )
        ]
        return custom + super().get_urls()

    def adjust_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A form whose submit calls ``stock_adjust`` (version-checked, audited, never below reserved)."""
        if not request.user.has_perm("inventory.add_stockadjustment"):
            raise PermissionDenied
        stock = get_object_or_404(Stock.objects.select_related("product"), pk=object_id)
        form = StockAdjustForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                on_hand = stock_adjust(
                    product_id=stock.product_id,
                    delta=form.cleaned_data["delta"],
                    reason=form.cleaned_data["reason"],
                    user=request.user,
                )
            except DomainError as exc:
                form.add_error(None, exc.detail)
            else:
                self.message_user(request, f"{stock.product.sku}: on hand is now {on_hand}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:inventory_stock_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Adjust stock of {stock.product}",
            "opts": self.model._meta,
            "original": stock,
            "stock": stock,
            "form": form,
        }
        return TemplateResponse(request, "admin/inventory/stock/adjust.html", context)


class ExpiryFilter(admin.SimpleListFilter):
    title = "expiry"
    parameter_name = "expiry"

    def lookups(self, request, model_admin):  # noqa: ANN001, ANN201
        return [("past", "Past expiry"), ("future", "Not yet expired")]

    def queryset(self, request, queryset):  # noqa: ANN001, ANN201
        now = timezone.now()
        if self.value() == "past":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "future":
            return queryset.filter(expires_at__gt=now)
        return queryset


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("holder", "product", "quantity", "status", "expires_at", "created_at", "updated_at", "version")
    list_filter = ("status", ExpiryFilter, ("expires_at", admin.DateFieldListFilter))
    search_fields = ("holder", "product__sku")
    list_select_related = ("product",)
    date_hierarchy = "created_at"


@admin.register(StockAdjustment)
class StockAdjustmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("at", "product", "delta", "on_hand_after", "reason", "who", "reference")
    list_filter = (("at", admin.DateFieldListFilter),)
    search_fields = ("product__sku", "reason", "=reference")
    list_select_related = ("product", "who")
