from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from cartflow import metrics, signin, storefront, views

# The back office says whose it is: staff land on "CartFlow operations", not Django's default header.
admin.site.site_header = "CartFlow operations"
admin.site.site_title = "CartFlow"
admin.site.index_title = "Orders, stock and payments"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("problems/", views.problem_index, name="problem-index"),
    path("problems/<str:slug>", views.problem_detail, name="problem-detail"),
    # Ahead of admin.site.urls: the admin login counts attempts per address and username (cartflow/signin.py).
    path("admin/login/", signin.admin_login, name="admin-login"),
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

# Where Django itself answers (no view, a refused request, a failure outside a view): problems under /api.
handler400 = "cartflow.exceptions.api_400"
handler403 = "cartflow.exceptions.api_403"
handler404 = "cartflow.exceptions.api_404"
handler500 = "cartflow.exceptions.api_500"
