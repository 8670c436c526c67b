from django.urls import path

from orders import apis, flash_queue_apis

urlpatterns = [
    path("checkout/start", apis.CheckoutStartApi.as_view(), name="checkout-start"),
    path("checkout/confirm", apis.CheckoutConfirmApi.as_view(), name="checkout-confirm"),
    path("checkout/<str:checkout_id>", apis.CheckoutDetailApi.as_view(), name="checkout-detail"),
    path(
        "checkout/<str:checkout_id>/payment-intent",
        apis.CheckoutPaymentIntentApi.as_view(),
        name="checkout-payment-intent",
    ),
    path("checkout/<str:checkout_id>/cancel", apis.CheckoutCancelApi.as_view(), name="checkout-cancel"),
    path("orders/<str:order_id>", apis.OrderDetailApi.as_view(), name="order-detail"),
    path("flash-sales/<str:sku>/queue", flash_queue_apis.FlashQueueJoinApi.as_view(), name="flash-queue-join"),
    path(
        "flash-sales/<str:sku>/queue/<str:ticket>",
        flash_queue_apis.FlashQueueTicketApi.as_view(),
        name="flash-queue-ticket",
    ),
]
