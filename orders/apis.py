"""Checkout and order endpoints (docs/api.md, "Checkout"): parse, call one saga service, render."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cart.identity import cart_ref_from_request, token_sent
from cart.throttles import CartClientThrottle
from cartflow.clients import hold_cap_key
from cartflow.idempotency import idempotent
from cartflow.schema import problem_responses
from cartflow.serializers import LineOutputSerializer
from orders.errors import CartEmpty
from orders.saga import driver as saga_services
from orders.selectors import (
    PAYMENT_STATUSES,
    Caller,
    checkout_active_for_cart,
    checkout_get,
    checkout_payment_intent_view,
    checkout_view,
    order_get,
    order_payment_status,
)

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Same key + same body replays the stored response (24 h, scoped to the cart/user).",
)
IDEMPOTENCY_PROBLEMS = ("idempotency_key_reused", "idempotency_request_in_progress", "invalid_idempotency_key")


def _cart_empty(request: Request, caller: Caller) -> CartEmpty:
    """``cart_empty`` saying whether a cart token came with the request (a client without a cookie jar
    that forgot the header sees why)."""
    sent = token_sent(request)
    if caller.user_id is not None:
        detail = "Your cart is empty."
    elif not sent:
        detail = (
            "No cart token was sent, so there is no cart to check out: send the token of your cart writes as the "
            "X-Cart-Token header (or the cart_token cookie)."
        )
    else:
        detail = "The cart named by the cart token sent is empty, has expired, or was never issued by this server."
    return CartEmpty(detail, cartTokenSent=sent)


def _caller(request: Request) -> Caller:
    ref = cart_ref_from_request(request)
    user = getattr(request, "user", None)
    user_id = user.pk if user is not None and user.is_authenticated else None
    return Caller(cart_key=ref.key if ref else None, token_hash=ref.token_hash if ref else None, user_id=user_id)


class CheckoutApiBase(APIView):
    throttle_classes = [CartClientThrottle]
    throttle_scope = "checkout"

    def idempotency_scope(self, request: Request) -> str:
        ref = cart_ref_from_request(request)
        return f"checkout:{ref.key}" if ref else ""


# --- serializers ---


class CheckoutLineOutputSerializer(LineOutputSerializer):
    pass  # the line, under the checkout's component name (cartflow/serializers.py)


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
    returnUrl = serializers.URLField(  # noqa: N815
        source="return_url",
        required=False,
        max_length=2000,
        help_text="Stripe's return_url: where a redirect (3-D Secure's challenge page) sends the buyer back; "
        "with it, a 202's nextAction is redirect_to_url.",
    )

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


class OrderLineOutputSerializer(LineOutputSerializer):
    pass  # the line, under the order's component name (cartflow/serializers.py)


class OrderOutputSerializer(serializers.Serializer):
    orderId = serializers.CharField(source="public_id")  # noqa: N815
    status = serializers.CharField(help_text="awaiting_payment, paid, confirmed, fulfilled or cancelled.")
    paymentStatus = serializers.SerializerMethodField(  # noqa: N815
        help_text="unpaid, authorized (not captured yet), paid, partially_refunded or refunded."
    )
    email = serializers.CharField()
    currency = serializers.CharField()
    subtotal = serializers.IntegerField()
    total = serializers.IntegerField()
    refundedAmount = serializers.IntegerField(  # noqa: N815
        source="amount_refunded", help_text="Minor units refunded so far (pending refunds included, as Stripe counts)."
    )
    amountRefunded = serializers.IntegerField(  # noqa: N815
        source="amount_refunded", help_text="The same as refundedAmount, kept for existing clients."
    )
    lines = OrderLineOutputSerializer(many=True, source="lines.all")
    createdAt = serializers.DateTimeField(source="created_at")  # noqa: N815

    @extend_schema_field(serializers.ChoiceField(choices=PAYMENT_STATUSES))
    def get_paymentStatus(self, order: Any) -> str:  # noqa: N802 - DRF names it after the field
        return order_payment_status(order)


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
                "flash_ticket_not_found",
                "quantity_limit_exceeded",
                "too_many_active_checkouts",
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
            raise _cart_empty(request, caller)
        try:
            saga, created = saga_services.checkout_start(
                cart_key=caller.cart_key,
                token_hash=caller.token_hash,
                user_id=caller.user_id,
                email=validated.get("email") or getattr(request.user, "email", "") or None,
                flash_ticket=validated.get("flash_ticket") or request.headers.get("Flash-Ticket") or None,
                client_key=hold_cap_key(request),
            )
        except CartEmpty:
            raise _cart_empty(request, caller) from None
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
            return_url=data.validated_data.get("return_url"),
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
