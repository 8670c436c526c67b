"""Stripe's webhook endpoint: verify, store once, answer 200 fast; a Celery task does the work."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cartflow.schema import problem_responses
from payments.webhooks.intake import webhook_event_receive


class StripeWebhookReceivedSerializer(serializers.Serializer):
    received = serializers.BooleanField()


class StripeWebhookApi(APIView):
    """No session auth (so no CSRF) and no throttling: the signature is the authentication."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(
        operation_id="stripe_webhook",
        summary="Stripe webhook intake",
        description=(
            "Verifies `Stripe-Signature` (300 s tolerance) against the raw body, stores the event once by its "
            "id and processes it asynchronously. Duplicates and unknown event types are answered 200."
        ),
        parameters=[OpenApiParameter("Stripe-Signature", str, OpenApiParameter.HEADER, required=True)],
        request=OpenApiTypes.OBJECT,
        responses={
            200: StripeWebhookReceivedSerializer,
            **problem_responses("webhook_signature_invalid", "malformed_event", "payload_too_large"),
        },
        tags=["webhooks"],
    )
    def post(self, request: Request) -> Response:
        # The raw bytes, exactly as signed: never request.data (parsing would change them).
        webhook_event_receive(payload=request.body, signature=request.headers.get("Stripe-Signature"))
        return Response(StripeWebhookReceivedSerializer({"received": True}).data)
