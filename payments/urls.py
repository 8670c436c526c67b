from django.urls import path

from payments import apis

urlpatterns = [
    path("webhooks/stripe", apis.StripeWebhookApi.as_view(), name="stripe-webhook"),
]
