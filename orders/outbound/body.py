"""The JSON an event is delivered as: ``{"id", "type", "createdAt", "data": {"order": …}}``.

``data.order`` is the order as ``GET /api/orders/{id}`` renders it (the same serializer, so the two cannot
drift), as the change left it: the order is rebuilt from the event's snapshot of its row, and its lines
(written once, at checkout start) are read. The body is rendered once per event and stored; every attempt
sends those bytes.
"""

from __future__ import annotations

import json
from typing import Any

from rest_framework.fields import DateTimeField

from orders.apis import OrderOutputSerializer
from orders.models import Order, OutboundEvent


def order_as_of(snapshot: dict[str, Any]) -> Order:
    """An unsaved Order carrying the snapshot's values (columns of the row ``to_jsonb`` wrote)."""
    values = {}
    for field in Order._meta.concrete_fields:
        if field.column in snapshot:
            values[field.attname] = field.to_python(snapshot[field.column])
    return Order(**values)


def event_body(event: OutboundEvent) -> str:
    order = OrderOutputSerializer(order_as_of(event.order_snapshot)).data
    document = {
        "id": event.public_id,
        "type": event.type,
        "createdAt": DateTimeField().to_representation(event.created_at),
        "data": {"order": order, **event.data},
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)
