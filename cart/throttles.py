"""Per-client throttling of cart writes (DRF, counted in the Redis cache)."""

from __future__ import annotations

from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from cart.store import unavailable_on_redis_error


class CartWriteThrottle(SimpleRateThrottle):
    """Scope ``cart_write`` (``CARTFLOW_CART_WRITE_RATE``): per signed-in user, else per client address.

    The rate is read when the throttle is built, not at import, so settings overrides apply. A Redis
    outage answers ``cart_unavailable`` like the rest of the cart, never a 500.
    """

    scope = "cart_write"

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request: Any, view: Any) -> str:
        user = getattr(request, "user", None)
        ident = f"user:{user.pk}" if user is not None and user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: Any, view: Any) -> bool:
        with unavailable_on_redis_error():
            return super().allow_request(request, view)


class SignInThrottle(CartWriteThrottle):
    """Scope ``sign_in`` (``CARTFLOW_SIGN_IN_RATE``): password attempts per client address, against guessing."""

    scope = "sign_in"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
