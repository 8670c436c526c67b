from django.urls import path

from inventory import apis

urlpatterns = [
    path("products", apis.ProductListApi.as_view(), name="product-list"),
    path("products/<int:product_id>", apis.ProductDetailApi.as_view(), name="product-detail"),
]
