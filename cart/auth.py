"""Sign-in for storefront clients: DRF tokens for username and password."""

from __future__ import annotations

from django.contrib.auth import authenticate
from rest_framework.authtoken.models import Token

from cart.errors import AuthenticationFailed


def auth_token_issue(*, username: str, password: str) -> tuple[int, str]:
    """The user's API token (created on first sign-in) for valid credentials: ``(user_id, key)``."""
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        raise AuthenticationFailed("Unknown username or wrong password.")
    token, _created = Token.objects.get_or_create(user=user)
    return user.pk, token.key
