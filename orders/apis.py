"""Checkout and order endpoints (docs/api.md, "Checkout"): parse, call one saga service, render."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cart.identity import cart_ref_from_request
from cartflow.idempotency import idempotent
from cartflow.schema import problem_responses
from cartflow.throttling import ScopedRedisThrottle
from orders import saga as saga_services
from orders.errors import CartEmpty
from orders.selectors import (
    Caller,
    checkout_active_for_cart,
    checkout_get,
    checkout_payment_intent_view,
    checkout_view,
    order_get,
)

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Same key + same body replays the stored response (24 h, scoped to the cart/user).",
)
IDEMPOTENCY_PROBLEMS = ("idempotency_key_reused", "idempotency_request_in_progress", "invalid_idempotency_key")


def _caller(request: Request) -> Caller:
    ref = cart_ref_from_request(request)
    user = getattr(request, "user", None)
    user_id = user.pk if user is not None and user.is_authenticated else None
    return Caller(cart_key=ref.key if ref else None, token_hash=ref.token_hash if ref else None, user_id=user_id)


class CheckoutApiBase(APIView):
    throttle_classes = [ScopedRedisThrottle]
    throttle_scope = "checkout"

    def idempotency_scope(self, request: Request) -> str:
        ref = cart_ref_from_request(request)
        return f"checkout:{ref.key}" if ref else ""


# --- serializers ---


class CheckoutLineOutputSerializer(serializers.Serializer):
    productId = serializers.IntegerField(source="product_id")  # noqa: N815
    sku = serializers.CharField()
    name = serializers.CharField()
    quantity = serializers.IntegerField()
    unitPrice = serializers.IntegerField(source="unit_price", help_text="Minor units.")  # noqa: N815
    lineTotal = serializers.IntegerField(source="line_total", help_text="Minor units.")  # noqa: N815


class CheckoutStepOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.CharField(help_text="about_to, done, indeterminate, failed, or the terminal state.")
    at = serializers.DateTimeField()


class CheckoutOutputSerializer(serializers.Serializer):
    checkoutId = serializers.CharField(source="checkout_id")  # noqa: N815
    orderId = serializers.CharField(source="order_id", allow_null=True)  # noqa: N815
    status = serializers.ChoiceField(choices=[s.value for s in saga_services.S])
    amount = serializers.IntegerField(help_text="Minor units.")
    currency = serializers.CharField()
    lines = CheckoutLineOutputSerializer(many=True)
    reservationExpiresAt = serializers.DateTimeField(source="reservation_expires_at", allow_null=True)  # noqa: N815
    paymentClientSecret = serializers.CharField(  # noqa: N815
        source="payment_client_secret",
        allow_null=True,
        help_text="The PaymentIntent's client secret (3-D Secure); null until the buyer pays, as the start "
        "creates no PaymentIntent.",
    )
    nextAction = serializers.JSONField(source="next_action", allow_null=True, required=False)  # noqa: N815
    paymentStatus = serializers.CharField(source="payment_status")  # noqa: N815


class CheckoutDetailOutputSerializer(CheckoutOutputSerializer):
    lastErrorCode = serializers.CharField(source="last_error_code", allow_null=True)  # noqa: N815
    steps = CheckoutStepOutputSerializer(many=True)


class CheckoutStartInputSerializer(serializers.Serializer):
    email = serializers.EmailField(required=False, allow_blank=True)
    flashTicket = serializers.CharField(  # noqa: N815
        source="flash_ticket",
        required=False,
        max_length=64,
        help_text="A fair-queue ticket (POST /api/flash-sales/{sku}/queue); the Flash-Ticket header works too.",
    )


FLASH_TICKET_HEADER = OpenApiParameter(
    "Flash-Ticket",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="An admitted flash-sale queue ticket: its holder goes ahead of buyers without one.",
)


class CheckoutConfirmInputSerializer(serializers.Serializer):
    paymentMethodId = serializers.CharField(  # noqa: N815
        source="payment_method", required=False, max_length=255, help_text="A Stripe PaymentMethod id (pm_…)."
    )
    confirmationToken = serializers.CharField(  # noqa: N815
        source="confirmation_token",
        required=False,
        max_length=255,
        help_text="A Stripe ConfirmationToken id (ctoken_…), instead of paymentMethodId.",
    )
    checkoutId = serializers.CharField(source="checkout_id", required=False, max_length=40)  # noqa: N815

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("payment_method")) == bool(attrs.get("confirmation_token")):
            raise serializers.ValidationError(
                {"paymentMethodId": "Send exactly one of paymentMethodId and confirmationToken."}, code="required"
            )
        return attrs


class CheckoutPaymentIntentOutputSerializer(serializers.Serializer):
    paymentIntentId = serializers.CharField(source="payment_intent_id")  # noqa: N815
    paymentClientSecret = serializers.CharField(  # noqa: N815
        source="client_secret", help_text="For Stripe.js (confirmPayment / confirmCardPayment)."
    )
    amount = serializers.IntegerField(help_text="Minor units.")
    currency = serializers.CharField()


class OrderLineOutputSerializer(serializers.Serializer):
    productId = serializers.IntegerField(source="product_id")  # noqa: N815
    sku = serializers.CharField()
    name = serializers.CharField()
    quantity = serializers.IntegerField()
    unitPrice = serializers.IntegerField(source="unit_price")  # noqa: N815
    lineTotal = serializers.IntegerField(source="line_total")  # noqa: N815


class OrderOutputSerializer(serializers.Serializer):
    orderId = serializers.CharField(source="public_id")  # noqa: N815
    status = serializers.CharField()
    paymentStatus = serializers.CharField(source="payment_status")  # noqa: N815
    email = serializers.CharField()
    currency = serializers.CharField()
    subtotal = serializers.IntegerField()
    total = serializers.IntegerField()
    amountRefunded = serializers.IntegerField(source="amount_refunded")  # noqa: N815
    lines = OrderLineOutputSerializer(many=True, source="lines.all")
    createdAt = serializers.DateTimeField(source="created_at")  # noqa: N815


def _render(saga: Any, *, status: int = 200, detail: bool = False, fresh: bool = False) -> Response:
    serializer = CheckoutDetailOutputSerializer if detail else CheckoutOutputSerializer
    return Response(serializer(checkout_view(saga=saga, steps=detail, fresh=fresh)).data, status=status)


_DATETIME = serializers.DateTimeField()


def _or_none(convert: Any, value: Any) -> Any:
    return None if value is None else convert(value)


def checkout_start_body(view: dict[str, Any]) -> dict[str, Any]:
    """What :class:`CheckoutOutputSerializer` renders for ``view``, built directly: the start is the hot path
    of a rush, and DRF deep-copies a serializer's fields on every instance (the nested lines' too), about a
    sixth of the instructions a start costs the web process (``python -m bench instructions``). Same keys,
    order and types; tests/orders/test_checkout_api.py holds the two equal, and the serializer still
    describes the response in the OpenAPI document."""
    return {
        "checkoutId": _or_none(str, view["checkout_id"]),
        "orderId": _or_none(str, view["order_id"]),
        "status": _or_none(str, view["status"]),
        "amount": _or_none(int, view["amount"]),
        "currency": _or_none(str, view["currency"]),
        "lines": [
            {
                "productId": _or_none(int, line["product_id"]),
                "sku": _or_none(str, line["sku"]),
                "name": _or_none(str, line["name"]),
                "quantity": _or_none(int, line["quantity"]),
                "unitPrice": _or_none(int, line["unit_price"]),
                "lineTotal": _or_none(int, line["line_total"]),
            }
            for line in view["lines"]
        ],
        "reservationExpiresAt": _or_none(_DATETIME.to_representation, view["reservation_expires_at"]),
        "paymentClientSecret": _or_none(str, view["payment_client_secret"]),
        "nextAction": view["next_action"],
        "paymentStatus": _or_none(str, view["payment_status"]),
    }


# --- views ---


class CheckoutStartApi(CheckoutApiBase):
    @extend_schema(
        operation_id="checkout_start",
        request=CheckoutStartInputSerializer,
        parameters=[IDEMPOTENCY_HEADER, FLASH_TICKET_HEADER],
        responses={
            201: CheckoutOutputSerializer,
            200: CheckoutOutputSerializer,
            **problem_responses(
                "cart_empty",
                "insufficient_stock",
                "sold_out",
                "flash_sale_busy",
                "product_not_found",
                "inventory_contention",
                "checkout_in_progress",
                *IDEMPOTENCY_PROBLEMS,
                body=True,
            ),
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        validated: dict[str, Any] = {}
        if request.data:  # an empty body (what a rush sends) has nothing to validate: no serializer to build
            data = CheckoutStartInputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            validated = data.validated_data
        caller = _caller(request)
        if caller.cart_key is None:
            raise CartEmpty("There is no cart to check out.")
        saga, created = saga_services.checkout_start(
            cart_key=caller.cart_key,
            token_hash=caller.token_hash,
            user_id=caller.user_id,
            email=validated.get("email") or getattr(request.user, "email", "") or None,
            flash_ticket=validated.get("flash_ticket") or request.headers.get("Flash-Ticket") or None,
        )
        # A start that created the checkout holds its saga, order and hold as just written: render them.
        body = checkout_start_body(checkout_view(saga=saga, fresh=created))
        return Response(body, status=201 if created else 200)


class CheckoutConfirmApi(CheckoutApiBase):
    @extend_schema(
        operation_id="checkout_confirm",
        request=CheckoutConfirmInputSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            200: CheckoutOutputSerializer,
            202: CheckoutOutputSerializer,
            **problem_responses(
                "checkout_not_found",
                "payment_declined",
                "payment_method_invalid",
                "reservation_expired",
                "checkout_not_confirmable",
                "checkout_in_progress",
                "payment_provider_busy",
                "payment_provider_unavailable",
                *IDEMPOTENCY_PROBLEMS,
                body=True,
            ),
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = CheckoutConfirmInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        caller = _caller(request)
        checkout_id = data.validated_data.get("checkout_id")
        found = (
            checkout_get(checkout_id=checkout_id, caller=caller)
            if checkout_id
            else checkout_active_for_cart(caller=caller)
        )
        saga = saga_services.checkout_confirm(
            saga_id=found.pk,
            payment_method=data.validated_data.get("payment_method"),
            confirmation_token=data.validated_data.get("confirmation_token"),
            loaded=found,
        )
        return _render(saga, status=202 if saga.state not in ("confirmed", "fulfilled") else 200)


CHECKOUT_ID_PARAMETER = OpenApiParameter("checkout_id", str, OpenApiParameter.PATH, pattern=r"^chk_[a-z2-7]+$")


class CheckoutPaymentIntentApi(CheckoutApiBase):
    @extend_schema(
        operation_id="checkout_payment_intent",
        request=None,
        parameters=[CHECKOUT_ID_PARAMETER],
        responses={
            200: CheckoutPaymentIntentOutputSerializer,
            **problem_responses(
                "checkout_not_found",
                "reservation_expired",
                "checkout_not_confirmable",
                "checkout_in_progress",
                "payment_provider_busy",
                "payment_provider_unavailable",
            ),
        },
    )
    def post(self, request: Request, checkout_id: str) -> Response:
        found = checkout_get(checkout_id=checkout_id, caller=_caller(request))
        saga = saga_services.checkout_payment_intent(saga_id=found.pk, loaded=found)
        return Response(CheckoutPaymentIntentOutputSerializer(checkout_payment_intent_view(saga=saga)).data)


class CheckoutDetailApi(CheckoutApiBase):
    throttle_classes: list = []

    @extend_schema(
        operation_id="checkout_retrieve",
        # The pattern keeps /api/checkout/start and /confirm (POST-only routes) out of this template (fuzzer).
        parameters=[CHECKOUT_ID_PARAMETER],
        responses={200: CheckoutDetailOutputSerializer, **problem_responses("checkout_not_found")},
    )
    def get(self, request: Request, checkout_id: str) -> Response:
        saga = checkout_get(checkout_id=checkout_id, caller=_caller(request))
        return _render(saga, detail=True)


class CheckoutCancelApi(CheckoutApiBase):
    @extend_schema(
        operation_id="checkout_cancel",
        request=None,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            200: CheckoutOutputSerializer,
            **problem_responses(
                "checkout_not_found",
                "checkout_not_cancellable",
                "checkout_in_progress",
                "payment_provider_busy",
                "payment_provider_unavailable",
                *IDEMPOTENCY_PROBLEMS,
            ),
        },
    )
    @idempotent
    def post(self, request: Request, checkout_id: str) -> Response:
        found = checkout_get(checkout_id=checkout_id, caller=_caller(request))
        saga = saga_services.checkout_cancel(saga_id=found.pk)
        return _render(saga)


class OrderDetailApi(APIView):
    @extend_schema(
        operation_id="order_retrieve",
        responses={200: OrderOutputSerializer, **problem_responses("order_not_found")},
    )
    def get(self, request: Request, order_id: str) -> Response:
        order = order_get(order_id=order_id, caller=_caller(request))
        return Response(OrderOutputSerializer(order).data)
