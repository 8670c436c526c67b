"""Output serializers that more than one app renders."""

from __future__ import annotations

from rest_framework import serializers


# One priced product line: the same six fields in a cart (``items``), a checkout and an order
# (``lines``). Each app names a subclass after its own component in the OpenAPI document, so the
# component names that clients generate types from stay as they are. No docstring: drf-spectacular
# would copy it into every subclass's component as its description.
class LineOutputSerializer(serializers.Serializer):
    productId = serializers.IntegerField(source="product_id")  # noqa: N815
    sku = serializers.CharField()
    name = serializers.CharField()
    quantity = serializers.IntegerField()
    unitPrice = serializers.IntegerField(source="unit_price", help_text="Minor units.")  # noqa: N815
    lineTotal = serializers.IntegerField(source="line_total", help_text="Minor units.")  # noqa: N815
