"""Who owns the cart a request talks to: a signed-in user, or the holder of an anonymous cart token.

Guest tokens are 256-bit random, URL-safe strings sent back as the ``X-Cart-Token`` header or the
``cart_token`` cookie. Redis never sees a raw token: guest carts are stored under its SHA-256, so a
key listing (or a Redis dump) cannot be replayed as a cart token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

TOKEN_HEADER = "X-Cart-Token"
TOKEN_COOKIE = "cart_token"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


@dataclass(frozen=True)
class CartRef:
    """``key`` is the cart's Redis id: ``u:<user id>`` or ``t:<sha256 of the token>``."""

    key: str
    token_hash: str | None
    user_id: int | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_is_well_formed(token: str | None) -> bool:
    return bool(token) and bool(_TOKEN_RE.match(token or ""))


def token_new() -> str:
    return secrets.token_urlsafe(32)


def token_from_request(request: Any) -> str | None:
    """The well-formed guest token the request presents (header first, then cookie), else None."""
    token = request.headers.get(TOKEN_HEADER) or request.COOKIES.get(TOKEN_COOKIE)
    return token if token_is_well_formed(token) else None


def token_sent(request: Any) -> bool:
    """Whether the request carries a cart token at all (well-formed or not), to tell a client which it was."""
    return bool(request.headers.get(TOKEN_HEADER) or request.COOKIES.get(TOKEN_COOKIE))


def cart_ref_for_token(token: str) -> CartRef:
    digest = token_hash(token)
    return CartRef(key=f"t:{digest}", token_hash=digest, user_id=None)


def cart_ref_for_user(user_id: int, *, token: str | None = None) -> CartRef:
    return CartRef(key=f"u:{user_id}", token_hash=token_hash(token) if token else None, user_id=user_id)


def cart_ref_from_request(request: Any) -> CartRef | None:
    """The cart this request names: the user's when signed in, else the guest token's; None if neither."""
    token = token_from_request(request)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return cart_ref_for_user(user.pk, token=token)
    return cart_ref_for_token(token) if token else None
