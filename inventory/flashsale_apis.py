"""The flash sale's fair queue over HTTP: join (a buyer told ``flash_sale_busy``) and poll a ticket.

Thin views over inventory.flashsale_queue. The ticket is used by sending it to
``POST /api/checkout/start`` as the ``Flash-Ticket`` header (or body field ``flashTicket``).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cartflow.schema import problem_responses
from cartflow.throttling import ScopedAddressThrottle
from inventory.flashsale_queue import QueueTicket, flash_queue_join, flash_queue_status, flash_sale_product_id


class FlashQueueTicketOutputSerializer(serializers.Serializer):
    ticket = serializers.CharField(help_text="Send it as the Flash-Ticket header of POST /api/checkout/start.")
    productId = serializers.IntegerField(source="product_id")  # noqa: N815
    position = serializers.IntegerField(help_text="1 = next in line; admitted tickets count too.")
    admitted = serializers.BooleanField(help_text="A token is free for this ticket: start the checkout now.")
    expiresAt = serializers.DateTimeField(  # noqa: N815
        source="expires_at",
        help_text="Admitted: start the checkout before this, or the place goes to the next ticket. "
        "Waiting: poll again before this.",
    )


class FlashQueueJoinOutputSerializer(FlashQueueTicketOutputSerializer):
    pollUrl = serializers.CharField(source="poll_url", help_text="GET it to follow the ticket.")  # noqa: N815


def _render(request: Request, sku: str, ticket: QueueTicket, *, status: int) -> Response:
    data = {
        "ticket": ticket.ticket,
        "product_id": ticket.product_id,
        "position": ticket.position,
        "admitted": ticket.admitted,
        "expires_at": ticket.expires_at,
        "poll_url": f"/api/flash-sales/{sku}/queue/{ticket.ticket}",
    }
    serializer = FlashQueueJoinOutputSerializer if status == 201 else FlashQueueTicketOutputSerializer
    return Response(serializer(data).data, status=status)


class FlashQueueJoinApi(APIView):
    # Per address: a queue place is the scarce thing here, and a new cart token would buy another one.
    throttle_classes = [ScopedAddressThrottle]
    throttle_scope = "checkout"

    @extend_schema(
        operation_id="flash_sale_queue_join",
        request=None,
        responses={
            201: FlashQueueJoinOutputSerializer,
            **problem_responses("product_not_found", "flash_sale_not_active", "sold_out"),
        },
    )
    def post(self, request: Request, sku: str) -> Response:
        """Hold a place in the product's fair queue (for a buyer told `flash_sale_busy`)."""
        ticket = flash_queue_join(product_id=flash_sale_product_id(sku=sku))
        return _render(request, sku, ticket, status=201)


class FlashQueueTicketApi(APIView):
    """Polled every second or two by each waiting buyer: no throttle, no database query (cached SKU)."""

    @extend_schema(
        operation_id="flash_sale_queue_ticket",
        responses={
            200: FlashQueueTicketOutputSerializer,
            **problem_responses("product_not_found", "flash_sale_not_active", "flash_ticket_not_found"),
        },
    )
    def get(self, request: Request, sku: str, ticket: str) -> Response:
        """Where the ticket stands; polling also keeps it from being dropped as abandoned."""
        status = flash_queue_status(product_id=flash_sale_product_id(sku=sku), ticket=ticket)
        return _render(request, sku, status, status=200)
