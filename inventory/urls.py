from django.urls import path

from inventory import apis, flashsale_apis

urlpatterns = [
    path("products", apis.ProductListApi.as_view(), name="product-list"),
    path("products/<int:product_id>", apis.ProductDetailApi.as_view(), name="product-detail"),
    path("flash-sales/<str:sku>/queue", flashsale_apis.FlashQueueJoinApi.as_view(), name="flash-queue-join"),
    path(
        "flash-sales/<str:sku>/queue/<str:ticket>",
        flashsale_apis.FlashQueueTicketApi.as_view(),
        name="flash-queue-ticket",
    ),
]
