from django.urls import path

from cart import apis

urlpatterns = [
    path("cart", apis.CartApi.as_view(), name="cart"),
    path("cart/items", apis.CartItemCreateApi.as_view(), name="cart-items"),
    path("cart/items/<int:product_id>", apis.CartItemApi.as_view(), name="cart-item"),
    path("cart/merge", apis.CartMergeApi.as_view(), name="cart-merge"),
    path("auth/token", apis.AuthTokenApi.as_view(), name="auth-token"),
]
