from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from cartflow import storefront, views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("", include("django_prometheus.urls")),  # /metrics
    path("problems/", views.problem_index, name="problem-index"),
    path("problems/<str:slug>", views.problem_detail, name="problem-detail"),
    path("admin/", admin.site.urls),
    path("shop/config.json", storefront.storefront_config, name="storefront-config"),
    path("shop/", storefront.storefront_file, name="storefront"),
    path("shop/<str:name>", storefront.storefront_file, name="storefront-file"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api/", include("inventory.urls")),
    path("api/", include("cart.urls")),
    path("api/", include("orders.urls")),
    path("api/", include("payments.urls")),
    re_path(r"^api(?:/(?P<rest>.*))?$", views.api_not_found),
]

handler404 = "cartflow.exceptions.api_404"
handler500 = "cartflow.exceptions.api_500"
