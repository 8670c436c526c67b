from django.contrib import admin

from inventory.models import Product, Stock


class StockInline(admin.StackedInline):
    model = Stock
    can_delete = False
    readonly_fields = ("on_hand", "reserved", "version", "updated_at")
    extra = 0


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("id", "sku", "name", "price", "currency", "active", "flash_sale")
    list_filter = ("active", "flash_sale", "currency")
    search_fields = ("sku", "name")
    inlines = [StockInline]

    def save_model(self, request, obj, form, change) -> None:  # noqa: ANN001
        from inventory.selectors import product_cache_invalidate

        super().save_model(request, obj, form, change)
        if not change:
            Stock.objects.get_or_create(product=obj)
        product_cache_invalidate(product_id=obj.pk)


@admin.register(Stock)
class StockAdmin(admin.ModelAdmin):
    list_display = ("product", "on_hand", "reserved", "version", "updated_at")
    search_fields = ("product__sku", "product__name")
    readonly_fields = ("product", "on_hand", "reserved", "version", "updated_at")

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False
