"""Per-client throttling of cart writes (DRF, counted in the Redis cache)."""

from __future__ import annotations

from typing import Any

from cart.store import unavailable_on_redis_error
from cartflow.throttling import RedisFixedWindowThrottle


class CartWriteThrottle(RedisFixedWindowThrottle):
    """Scope ``cart_write`` (``CARTFLOW_CART_WRITE_RATE``): per signed-in user, else per client address.

    The rate is read when the throttle is built, not at import, so settings overrides apply. A Redis
    outage answers ``cart_unavailable`` like the rest of the cart, never a 500.
    """

    scope = "cart_write"

    def allow_request(self, request: Any, view: Any) -> bool:
        with unavailable_on_redis_error():
            return super().allow_request(request, view)


class SignInThrottle(CartWriteThrottle):
    """Scope ``sign_in`` (``CARTFLOW_SIGN_IN_RATE``): password attempts per client address, against guessing."""

    scope = "sign_in"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return f"throttle:{self.scope}:{self.get_ident(request)}"
