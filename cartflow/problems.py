"""The one registry of problem codes, and the domain error family that carries them.

The exception handler (cartflow/exceptions.py), the OpenAPI response schemas (cartflow/schema.py) and
the human-readable pages at ``/problems/<code>`` are all built from :data:`REGISTRY`. Services raise
:class:`DomainError` subclasses (or ``DomainError(code=...)``); they never build HTTP responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProblemType:
    code: str
    status: int
    title: str
    description: str
    extensions: tuple[str, ...] = ()
    retry_after: bool = False

    @property
    def slug(self) -> str:
        return self.code.replace("_", "-")

    @property
    def type_uri(self) -> str:
        return f"/problems/{self.slug}"


_TYPES = [
    # --- generic HTTP ---
    ProblemType("not_found", 404, "Not found", "No resource lives at this path."),
    ProblemType("method_not_allowed", 405, "Method not allowed", "This path does not accept this HTTP method."),
    ProblemType(
        "malformed_json", 400, "Malformed JSON", "The request body is not valid JSON, or is nested too deeply."
    ),
    ProblemType(
        "bad_request",
        400,
        "Bad request",
        "The request cannot be served as sent (e.g. a Host this server does not answer for, or too many fields).",
    ),
    ProblemType(
        "payload_too_large",
        413,
        "Payload too large",
        "The request body is larger than the server accepts; `limit` says how many bytes it accepts.",
        ("limit",),
    ),
    ProblemType(
        "validation_error",
        400,
        "Validation error",
        "One or more fields are invalid; `errors` lists each with its field, code and detail.",
        ("errors",),
    ),
    ProblemType(
        "unsupported_media_type",
        415,
        "Unsupported media type",
        "Send the body as JSON, with the header Content-Type: application/json.",
    ),
    ProblemType(
        "not_acceptable", 406, "Not acceptable", "The server cannot produce a response in the requested format."
    ),
    ProblemType("not_authenticated", 401, "Not authenticated", "Sign in (Authorization: Token <key>) to use this."),
    ProblemType("authentication_failed", 401, "Authentication failed", "The credentials or token are not valid."),
    ProblemType("permission_denied", 403, "Permission denied", "You may not do this."),
    ProblemType(
        "rate_limited", 429, "Too many requests", "Slow down and retry after `Retry-After` seconds.", retry_after=True
    ),
    ProblemType(
        "internal_error",
        500,
        "Internal error",
        "Something unexpected failed on our side; quote the requestId when you report it.",
    ),
    ProblemType(
        "service_unavailable",
        503,
        "Service unavailable",
        "A backing service (PostgreSQL, Redis or the broker) is unreachable.",
        ("checks",),
        retry_after=True,
    ),
    # --- catalog and cart ---
    ProblemType("product_not_found", 404, "Product not found", "No active product has this id.", ("productId",)),
    ProblemType(
        "insufficient_stock",
        409,
        "Insufficient stock",
        "Fewer units are available than asked for; `available` says how many.",
        ("productId", "available"),
    ),
    ProblemType(
        "cart_version_conflict",
        412,
        "Cart version conflict",
        "The cart changed since the version in If-Match; `currentVersion` is the version now.",
        ("currentVersion",),
    ),
    ProblemType(
        "currency_mismatch",
        409,
        "Currency mismatch",
        "A cart holds products of one currency only.",
        ("productId", "cartCurrency", "productCurrency"),
    ),
    ProblemType(
        "cart_unavailable",
        503,
        "Cart unavailable",
        "The cart store is unreachable for a moment; retry after `Retry-After` seconds.",
        retry_after=True,
    ),
    ProblemType(
        "cart_empty",
        409,
        "Cart empty",
        "There is nothing in the cart to check out. `cartTokenSent` says whether the request named a guest cart "
        "(X-Cart-Token header or cart_token cookie): without one there is no cart to check out.",
        ("cartTokenSent",),
    ),
    # --- inventory ---
    ProblemType("sold_out", 409, "Sold out", "This flash-sale product has no stock left.", ("productId",)),
    ProblemType(
        "flash_sale_busy",
        429,
        "Flash sale busy",
        "Every remaining unit is held by a checkout in progress; retry after `Retry-After` seconds.",
        ("productId",),
        retry_after=True,
    ),
    ProblemType(
        "flash_sale_not_active",
        409,
        "Flash sale not active",
        "This product is not in a flash sale, so it has no queue: start a checkout directly.",
        ("productId",),
    ),
    ProblemType(
        "flash_ticket_not_found",
        404,
        "Flash ticket not found",
        "This queue ticket has no place for this cart: it was used, joined by another cart, or lost its "
        "place (not used within its admission window, or not polled in time). Join the queue again.",
        ("productId",),
    ),
    ProblemType(
        "inventory_contention",
        503,
        "Inventory contention",
        "Too many buyers raced for the same stock; retry after `Retry-After` seconds.",
        ("productId",),
        retry_after=True,
    ),
    ProblemType(
        "stock_below_reserved",
        409,
        "Stock below reserved",
        "On hand may not drop below the units held by checkouts; `reserved` says how many are held.",
        ("productId", "onHand", "reserved"),
    ),
    # --- checkout ---
    ProblemType("checkout_not_found", 404, "Checkout not found", "No checkout with this id is visible to you."),
    ProblemType("order_not_found", 404, "Order not found", "No order with this id is visible to you."),
    ProblemType(
        "payment_declined",
        402,
        "Payment declined",
        "The card was declined; the checkout stays open for another payment method.",
        ("declineCode", "checkoutId"),
    ),
    ProblemType(
        "reservation_expired",
        409,
        "Reservation expired",
        "The stock hold for this checkout has expired; start a new checkout.",
        ("checkoutId",),
    ),
    ProblemType(
        "checkout_not_confirmable",
        409,
        "Checkout not confirmable",
        "The checkout is not in a state that can be confirmed; `checkoutStatus` says which.",
        ("checkoutId", "checkoutStatus"),
    ),
    ProblemType(
        "checkout_not_cancellable",
        409,
        "Checkout not cancellable",
        "The checkout has been paid or has already ended; `checkoutStatus` says which.",
        ("checkoutId", "checkoutStatus"),
    ),
    ProblemType(
        "checkout_in_progress",
        409,
        "Checkout in progress",
        "Another request is driving this checkout right now; retry after `Retry-After` seconds.",
        ("checkoutId",),
        retry_after=True,
    ),
    ProblemType(
        "quantity_limit_exceeded",
        409,
        "Quantity limit exceeded",
        "More units of this product than one buyer may hold or buy at once, counting the buyer's other "
        "unfinished checkouts; `limit` says how many. Lower the quantity, or finish or cancel another checkout.",
        ("productId", "limit"),
    ),
    ProblemType(
        "too_many_active_checkouts",
        429,
        "Too many active checkouts",
        "This client (the signed-in user, else the address) already has as many unfinished checkouts as it "
        "may hold; `limit` says how many. Finish or cancel one, or retry after `Retry-After` seconds, when "
        "the oldest hold expires.",
        ("limit",),
        retry_after=True,
    ),
    ProblemType(
        "payment_provider_busy",
        503,
        "Payment provider busy",
        "CartFlow's shared budget of Stripe calls is spent for now; nothing was charged and the reservation is "
        "kept. Retry the same request after `Retry-After` seconds.",
        retry_after=True,
    ),
    ProblemType(
        "payment_method_invalid",
        400,
        "Payment method invalid",
        "The payment method or confirmation token is unknown or cannot be used; this is not a decline. "
        "Send another one.",
    ),
    ProblemType(
        "payment_provider_unavailable",
        503,
        "Payment provider unavailable",
        "Stripe could not be reached; nothing was charged twice. Retry after `Retry-After` seconds.",
        retry_after=True,
    ),
    # --- refunds and cancellation after payment (operations staff: admin and management commands) ---
    ProblemType(
        "order_not_refundable",
        409,
        "Order not refundable",
        "Only a confirmed or fulfilled order whose payment was captured can be refunded; `orderStatus` and "
        "`paymentStatus` say what it is.",
        ("orderId", "orderStatus", "paymentStatus"),
    ),
    ProblemType(
        "order_not_cancellable",
        409,
        "Order not cancellable",
        "Only a confirmed or fulfilled order that was paid (or authorized) can be cancelled this way; an "
        "unpaid checkout is cancelled by the buyer. `orderStatus` and `paymentStatus` say what it is.",
        ("orderId", "orderStatus", "paymentStatus"),
    ),
    ProblemType(
        "refund_exceeds_remaining",
        409,
        "Refund exceeds what is left",
        "The refund asked for is more than what is left of the payment; `remaining` says how much is left.",
        ("orderId", "remaining", "currency"),
    ),
    ProblemType(
        "refund_in_progress",
        409,
        "Refund in progress",
        "A refund of this order has not finished yet (Stripe has not answered it); retry after `Retry-After` "
        "seconds, and it is finished first.",
        ("orderId", "refundSeq"),
        retry_after=True,
    ),
    ProblemType(
        "refund_failed",
        502,
        "Refund failed",
        "Stripe refused or failed the refund; nothing was refunded by it. `stripeCode` says why.",
        ("orderId", "refundSeq", "stripeCode"),
    ),
    # --- idempotency ---
    ProblemType(
        "idempotency_key_reused",
        422,
        "Idempotency key reused",
        "This Idempotency-Key was used with a different request body.",
    ),
    ProblemType(
        "idempotency_request_in_progress",
        409,
        "Request in progress",
        "A request with this Idempotency-Key is still running; retry after `Retry-After` seconds.",
        retry_after=True,
    ),
    ProblemType(
        "invalid_idempotency_key",
        400,
        "Invalid idempotency key",
        "The Idempotency-Key header must be 1 to 255 visible ASCII characters.",
    ),
    # --- webhooks ---
    ProblemType(
        "webhook_signature_invalid",
        400,
        "Webhook signature invalid",
        "The Stripe-Signature header is missing, stale or does not match the body.",
    ),
    ProblemType("malformed_event", 400, "Malformed event", "The body is not a Stripe event."),
]

REGISTRY: dict[str, ProblemType] = {p.code: p for p in _TYPES}
BY_SLUG: dict[str, ProblemType] = {p.slug: p for p in _TYPES}


def problem_type(code: str) -> ProblemType:
    return REGISTRY[code]


class DomainError(Exception):
    """A failure the client can act on: a registered code, a detail, and structured extension members.

    ``extensions`` are rendered as top-level camelCase members of the problem (e.g. ``available``).
    ``retry_after`` (seconds) becomes the ``Retry-After`` header.
    """

    code: str = "internal_error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        if code is not None:
            self.code = code
        if self.code not in REGISTRY:
            raise ValueError(f"unregistered problem code {self.code!r}")
        self.detail = detail or REGISTRY[self.code].description
        self.extensions = extensions
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        super().__init__(self.detail)

    @property
    def problem(self) -> ProblemType:
        return REGISTRY[self.code]

    @property
    def status(self) -> int:
        return self.problem.status


@dataclass
class ProblemBody:
    """What the handler renders (kept here so non-DRF views can build the same shape)."""

    code: str
    detail: str
    instance: str
    request_id: str
    extensions: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        p = REGISTRY[self.code]
        body: dict[str, Any] = {
            "type": p.type_uri,
            "title": p.title,
            "status": p.status,
            "detail": self.detail,
            "instance": self.instance,
            "code": p.code,
            "requestId": self.request_id,
        }
        for key, value in self.extensions.items():
            body.setdefault(key, value)
        return body
