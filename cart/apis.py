"""Cart endpoints (docs/api.md, "Cart" and "Cart identity"): thin views over cart.services and cart.selectors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import structlog
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cart import services
from cart.auth import auth_token_issue
from cart.errors import CartMissing, CartValidationError
from cart.identity import (
    TOKEN_COOKIE,
    TOKEN_HEADER,
    CartRef,
    cart_ref_for_token,
    cart_ref_from_request,
    token_from_request,
    token_hash,
    token_is_well_formed,
    token_new,
)
from cart.selectors import CartView, cart_view_build, cart_view_empty, cart_view_get
from cart.services import CartSnapshot
from cart.throttles import CartWriteThrottle, SignInThrottle, cart_create_allow
from cartflow.problems import DomainError
from cartflow.schema import problem_responses
from cartflow.serializers import LineOutputSerializer
from cartflow.signin import sign_in_username_take

log = structlog.get_logger("cartflow.cart")
_IF_MATCH_RE = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only: no strings, floats or booleans."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class CartItemAddInputSerializer(serializers.Serializer):
    productId = StrictIntegerField(source="product_id", min_value=1)  # noqa: N815
    quantity = StrictIntegerField(min_value=1, help_text="Units to add (at most CARTFLOW_MAX_LINE_QUANTITY).")

    def validate_quantity(self, value: int) -> int:
        _check_max(value)
        return value


class CartItemSetInputSerializer(serializers.Serializer):
    quantity = StrictIntegerField(min_value=0, help_text="The line's new quantity; 0 removes the line.")

    def validate_quantity(self, value: int) -> int:
        _check_max(value)
        return value


class CartMergeInputSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="The anonymous cart token to merge into the signed-in user's cart.")

    def validate_token(self, value: str) -> str:
        if not token_is_well_formed(value):
            raise serializers.ValidationError("Not a cart token.", code="invalid")
        return value


class CartItemOutputSerializer(LineOutputSerializer):
    pass  # the line, under the cart's component name (cartflow/serializers.py)


class CartOutputSerializer(serializers.Serializer):
    token = serializers.CharField(allow_null=True, help_text="The guest cart token (null for a signed-in user).")
    items = CartItemOutputSerializer(many=True)
    itemCount = serializers.IntegerField(source="item_count", help_text="Units across all lines.")  # noqa: N815
    subtotal = serializers.IntegerField(help_text="Minor units.")
    currency = serializers.CharField(allow_null=True, help_text="ISO-4217, lower-case; null while empty.")
    version = serializers.IntegerField(help_text="Bumped by every change; the ETag.")
    expiresAt = serializers.DateTimeField(source="expires_at", allow_null=True)  # noqa: N815


class AuthTokenInputSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class AuthTokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`.")


_TOKEN_PARAM = OpenApiParameter(
    TOKEN_HEADER, str, OpenApiParameter.HEADER, description="Guest cart token (or the cart_token cookie)."
)
_IF_MATCH_PARAM = OpenApiParameter(
    "If-Match", str, OpenApiParameter.HEADER, description='The cart version this write expects, e.g. "3".'
)


def _check_max(value: int) -> None:
    limit = settings.CARTFLOW_MAX_LINE_QUANTITY
    if value > limit:
        raise serializers.ValidationError(f"Ensure this value is at most {limit}.", code="max_value")


def _if_match(request: Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    match = _IF_MATCH_RE.match(raw)
    if not match:
        raise CartValidationError(field="If-Match", code="invalid", detail='Send the cart version, e.g. "3".')
    return int(match.group(1))


def _guest_token(request: Request, ref: CartRef | None) -> str | None:
    return token_from_request(request) if ref is not None and ref.user_id is None else None


def _write(request: Request, op: Callable[[str, bool], CartSnapshot]) -> CartView:
    """Run a write against the request's cart (a client without a live cart gets a new guest cart, counted
    against its address); returns the cart as the write left it."""
    ref = cart_ref_from_request(request)
    token = _guest_token(request, ref)
    if ref is None:
        cart_create_allow(request)
        token = token_new()
        return cart_view_build(snapshot=op(cart_ref_for_token(token).key, False), token=token)
    try:
        snapshot = op(ref.key, ref.user_id is None)
    except CartMissing:
        cart_create_allow(request)
        token = token_new()
        snapshot = op(cart_ref_for_token(token).key, False)
    return cart_view_build(snapshot=snapshot, token=token)


_EXPIRES_AT = serializers.DateTimeField()


def cart_payload(view: CartView) -> dict[str, Any]:
    """``CartOutputSerializer(view).data``, built directly: every cart call renders a cart, and DRF deep-copies
    a serializer's fields per instance (per line too), about a tenth of a cart write's CPU in the profile.
    The serializer stays the schema; tests/cart/test_payload.py keeps the two identical."""
    return {
        "token": view.token,
        "items": [
            {
                "productId": item.product_id,
                "sku": item.sku,
                "name": item.name,
                "quantity": item.quantity,
                "unitPrice": item.unit_price,
                "lineTotal": item.line_total,
            }
            for item in view.items
        ],
        "itemCount": view.item_count,
        "subtotal": view.subtotal,
        "currency": view.currency,
        "version": view.version,
        "expiresAt": _EXPIRES_AT.to_representation(view.expires_at) if view.expires_at else None,
    }


def _render(request: Request, view: CartView, *, status: int = 200) -> Response:
    response = Response(cart_payload(view), status=status)
    _decorate(request, response, view)
    return response


def _decorate(request: Request, response: Response, view: CartView) -> None:
    response["ETag"] = f'"{view.version}"'
    if view.token:
        response[TOKEN_HEADER] = view.token
        response.set_cookie(
            TOKEN_COOKIE,
            view.token,
            max_age=settings.CARTFLOW_CART_TTL_SECONDS,
            httponly=True,
            samesite="Lax",
            secure=request.is_secure(),
        )


class CartApi(APIView):
    """``GET /api/cart`` and ``DELETE /api/cart``."""

    def get_throttles(self) -> list[Any]:
        return [CartWriteThrottle()] if self.request.method == "DELETE" else []

    @extend_schema(
        operation_id="cart_retrieve",
        parameters=[_TOKEN_PARAM],
        responses={200: CartOutputSerializer, **problem_responses("cart_unavailable")},
    )
    def get(self, request: Request) -> Response:
        ref = cart_ref_from_request(request)
        token = _guest_token(request, ref)
        view = cart_view_get(key=ref.key, token=token) if ref else cart_view_empty(token=None)
        return _render(request, view)

    @extend_schema(
        operation_id="cart_destroy",
        parameters=[_TOKEN_PARAM, _IF_MATCH_PARAM],
        responses={204: None, **problem_responses("cart_version_conflict", "validation_error", "cart_unavailable")},
    )
    def delete(self, request: Request) -> Response:
        if_match = _if_match(request)
        ref = cart_ref_from_request(request)
        response = Response(status=204)
        if ref is not None:
            version = services.cart_delete(key=ref.key, if_match=if_match)
            response["ETag"] = f'"{version}"'
        return response


class CartItemCreateApi(APIView):
    """``POST /api/cart/items``: add units of a product."""

    throttle_classes = [CartWriteThrottle]

    @extend_schema(
        operation_id="cart_items_create",
        parameters=[_TOKEN_PARAM, _IF_MATCH_PARAM],
        request=CartItemAddInputSerializer,
        responses={
            201: CartOutputSerializer,
            **problem_responses(
                "product_not_found",
                "insufficient_stock",
                "currency_mismatch",
                "cart_version_conflict",
                "cart_unavailable",
                body=True,
            ),
        },
    )
    def post(self, request: Request) -> Response:
        data = CartItemAddInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if_match = _if_match(request)
        view = _write(
            request,
            lambda key, must_exist: services.cart_item_add(
                key=key, must_exist=must_exist, if_match=if_match, **data.validated_data
            ),
        )
        return _render(request, view, status=201)


class CartItemApi(APIView):
    """``PUT`` and ``DELETE /api/cart/items/{productId}``."""

    throttle_classes = [CartWriteThrottle]

    @extend_schema(
        operation_id="cart_items_update",
        parameters=[_TOKEN_PARAM, _IF_MATCH_PARAM],
        request=CartItemSetInputSerializer,
        responses={
            200: CartOutputSerializer,
            **problem_responses(
                "product_not_found",
                "insufficient_stock",
                "currency_mismatch",
                "cart_version_conflict",
                "cart_unavailable",
                body=True,
            ),
        },
    )
    def put(self, request: Request, product_id: int) -> Response:
        data = CartItemSetInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if_match = _if_match(request)
        view = _write(
            request,
            lambda key, must_exist: services.cart_item_set(
                key=key,
                product_id=product_id,
                quantity=data.validated_data["quantity"],
                if_match=if_match,
                must_exist=must_exist,
            ),
        )
        return _render(request, view)

    @extend_schema(
        operation_id="cart_items_destroy",
        parameters=[_TOKEN_PARAM, _IF_MATCH_PARAM],
        responses={
            200: CartOutputSerializer,
            # not_found: a productId that is not an integer matches no route (found by the schema fuzzer).
            **problem_responses("cart_version_conflict", "validation_error", "cart_unavailable", "not_found"),
        },
    )
    def delete(self, request: Request, product_id: int) -> Response:
        if_match = _if_match(request)
        ref = cart_ref_from_request(request)
        token = _guest_token(request, ref)
        if ref is None:
            return _render(request, cart_view_empty(token=None))
        services.cart_item_remove(key=ref.key, product_id=product_id, if_match=if_match)
        return _render(request, cart_view_get(key=ref.key, token=token))


class CartMergeApi(APIView):
    """``POST /api/cart/merge``: fold a guest cart into the signed-in user's cart."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [CartWriteThrottle]

    @extend_schema(
        operation_id="cart_merge",
        request=CartMergeInputSerializer,
        responses={
            200: CartOutputSerializer,
            **problem_responses("not_authenticated", "currency_mismatch", "cart_unavailable", body=True),
        },
    )
    def post(self, request: Request) -> Response:
        data = CartMergeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.cart_merge(user_id=request.user.pk, token_hash=token_hash(data.validated_data["token"]))
        return _render(request, cart_view_get(key=f"u:{request.user.pk}", token=None))


class AuthTokenApi(APIView):
    """``POST /api/auth/token``: a DRF token for username and password; merges the presented guest cart."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes = [SignInThrottle]

    @extend_schema(
        operation_id="auth_token_create",
        parameters=[_TOKEN_PARAM],
        request=AuthTokenInputSerializer,
        responses={200: AuthTokenOutputSerializer, **problem_responses("authentication_failed", body=True)},
    )
    def post(self, request: Request) -> Response:
        data = AuthTokenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # SignInThrottle has counted the address before the body was read; now the username (cartflow/signin.py).
        settle = sign_in_username_take(username=data.validated_data["username"])
        try:
            user_id, key = auth_token_issue(**data.validated_data)
        except DomainError:
            settle(False)
            raise
        settle(True)
        response = Response(AuthTokenOutputSerializer({"token": key}).data)
        guest = token_from_request(request)
        if guest:
            try:
                services.cart_merge(user_id=user_id, token_hash=token_hash(guest))
            except DomainError as exc:  # signing in must not fail because of the cart
                log.warning("cart_merge_on_sign_in_failed", code=exc.code, user_id=user_id)
            else:
                response.delete_cookie(TOKEN_COOKIE, samesite="Lax")
        return response
