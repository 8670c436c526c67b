"""Catalog endpoints: thin views over inventory.selectors."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cartflow.schema import problem_responses
from inventory.errors import ProductNotFound
from inventory.selectors import product_get, product_list


class ProductOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sku = serializers.CharField()
    name = serializers.CharField()
    price = serializers.IntegerField(help_text="Unit price in minor units.")
    currency = serializers.CharField(help_text="ISO-4217, lower-case.")
    available = serializers.SerializerMethodField(help_text="On hand minus reserved, never negative.")
    flashSale = serializers.BooleanField(source="flash_sale")  # noqa: N815

    def get_available(self, product) -> int:  # noqa: ANN001
        stock = getattr(product, "stock", None)
        return stock.available if stock else 0


class ProductListFilterSerializer(serializers.Serializer):
    sku = serializers.CharField(required=False, max_length=64)
    page = serializers.IntegerField(required=False, min_value=1)


class ProductPageOutputSerializer(serializers.Serializer):
    """One page of products, as PageNumberPagination renders it (the fuzzer found the list documented bare)."""

    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ProductOutputSerializer(many=True)


class ProductPagination(PageNumberPagination):
    page_size = 50


class ProductListApi(APIView):
    @extend_schema(
        operation_id="products_list",
        parameters=[
            OpenApiParameter("sku", str, description="Exact SKU."),
            OpenApiParameter("page", int, description="1-based page number."),
        ],
        responses={200: ProductPageOutputSerializer, **problem_responses("not_found", "validation_error")},
    )
    def get(self, request: Request) -> Response:
        filters = ProductListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        paginator = ProductPagination()
        page = paginator.paginate_queryset(product_list(sku=filters.validated_data.get("sku")), request, view=self)
        return paginator.get_paginated_response(ProductOutputSerializer(page, many=True).data)


class ProductDetailApi(APIView):
    @extend_schema(
        operation_id="products_retrieve",
        responses={200: ProductOutputSerializer, **problem_responses("product_not_found")},
    )
    def get(self, request: Request, product_id: int) -> Response:
        product = product_get(product_id=product_id)
        if product is None:
            raise ProductNotFound(f"No active product has id {product_id}.", productId=product_id)
        return Response(ProductOutputSerializer(product).data)
