"""Per-client throttling of cart and checkout calls (DRF, counted in Redis by cartflow/throttling.py).

A client is its signed-in user, else its guest cart token, else its address (cartflow/clients.py): behind
one proxy or NAT, every shopper with a cart is counted apart. A token costs nothing to invent, so the
writes that create a cart are also counted per address (:func:`cart_create_allow`).
"""

from __future__ import annotations

from typing import Any

from cart.identity import token_from_request, token_hash
from cart.store import unavailable_on_redis_error
from cartflow.throttling import RedisFixedWindowThrottle, address_ident, throttle_take


def client_ident(request: Any) -> str:
    """``user:<id>``, ``cart:<token digest>`` or ``addr:<address>``: the client a cart-scoped throttle counts."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    token = token_from_request(request)
    return f"cart:{token_hash(token)[:32]}" if token else address_ident(request)


class CartClientThrottle(RedisFixedWindowThrottle):
    """The view's ``throttle_scope`` (e.g. ``checkout``), per user, else per cart token, else per address."""

    def get_cache_key(self, request: Any, view: Any) -> str:
        return f"throttle:{self.scope}:{client_ident(request)}"


class CartWriteThrottle(CartClientThrottle):
    """Scope ``cart_write`` (``CARTFLOW_CART_WRITE_RATE``).

    The rate is read when the throttle is built, not at import, so settings overrides apply. A Redis
    outage answers ``cart_unavailable`` like the rest of the cart, never a 500.
    """

    scope = "cart_write"

    def allow_request(self, request: Any, view: Any) -> bool:
        with unavailable_on_redis_error():
            return super().allow_request(request, view)


class SignInThrottle(CartWriteThrottle):
    """Scope ``sign_in`` (``CARTFLOW_SIGN_IN_RATE``): password attempts per client address, against guessing.

    The per-username count is cartflow/signin.py's, once the body names the username.
    """

    scope = "sign_in"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return f"throttle:{self.scope}:{self.get_ident(request)}"


def cart_create_allow(request: Any) -> None:
    """Count a write that starts a new guest cart against its address (scope ``cart_create``,
    ``CARTFLOW_CART_CREATE_RATE``); raises ``Throttled`` past the rate."""
    with unavailable_on_redis_error():
        throttle_take(scope="cart_create", ident=address_ident(request))
