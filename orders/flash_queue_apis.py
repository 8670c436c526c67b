"""The flash sale's fair queue over HTTP: join (a buyer told ``flash_sale_busy``) and poll a ticket.

Thin views over inventory.flashsale_queue. They live in orders because a ticket belongs to a cart: joining
needs a cart with something in it, and only that cart may poll the ticket or start a checkout with it (as
the ``Flash-Ticket`` header of ``POST /api/checkout/start``, or body field ``flashTicket``).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cart.identity import cart_ref_from_request, token_sent
from cart.services import cart_snapshot
from cartflow.schema import problem_responses
from cartflow.throttling import ScopedAddressThrottle
from inventory.flashsale_queue import QueueTicket, flash_queue_join, flash_queue_status, flash_sale_product_id
from orders.errors import CartEmpty


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
            **problem_responses("cart_empty", "product_not_found", "flash_sale_not_active", "sold_out"),
        },
    )
    def post(self, request: Request, sku: str) -> Response:
        """Hold a place in the product's fair queue for this cart (a buyer told `flash_sale_busy`)."""
        product_id = flash_sale_product_id(sku=sku)
        ref = cart_ref_from_request(request)
        if ref is None or not cart_snapshot(key=ref.key).lines:
            sent = token_sent(request)
            why = (
                "the cart is empty"
                if ref is not None or sent
                else "no cart token was sent (X-Cart-Token or the cookie)"
            )
            raise CartEmpty(f"Joining the queue needs a cart with something in it: {why}.", cartTokenSent=sent)
        ticket = flash_queue_join(product_id=product_id, cart_key=ref.key)
        return _render(request, sku, ticket, status=201)


class FlashQueueTicketApi(APIView):
    """Polled every second or two by each waiting buyer: no throttle, no database query (cached SKU). Only
    the cart that joined sees its ticket; any other asker is told it does not exist."""

    @extend_schema(
        operation_id="flash_sale_queue_ticket",
        responses={
            200: FlashQueueTicketOutputSerializer,
            **problem_responses("product_not_found", "flash_sale_not_active", "flash_ticket_not_found"),
        },
    )
    def get(self, request: Request, sku: str, ticket: str) -> Response:
        """Where the ticket stands; polling also keeps it from being dropped as abandoned."""
        ref = cart_ref_from_request(request)
        product_id = flash_sale_product_id(sku=sku)
        status = flash_queue_status(product_id=product_id, ticket=ticket, cart_key=ref.key if ref else "")
        return _render(request, sku, status, status=200)
