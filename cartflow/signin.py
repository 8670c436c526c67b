"""Password guessing: every sign-in is counted per client address and per username, before the password
is checked.

Both ways in count alike and share their counters: ``POST /api/auth/token`` (cart/apis.py) and the
Django admin login (:func:`admin_login`). Per address (scope ``sign_in``, ``CARTFLOW_SIGN_IN_RATE``)
slows one client trying many accounts; per username (scope ``sign_in_username``,
``CARTFLOW_SIGN_IN_USERNAME_RATE``) slows many clients trying one account. A sign-in that succeeds gives
its username attempt back, so only failures use up a username's allowance. Refused attempts never reach
the password hasher, which keeps a flood of guesses from taking the CPU away from shoppers.

These are the Redis counters every other throttle uses (cartflow/throttling.py), not a lockout table in
PostgreSQL: a guessing flood writes nothing to the database, every web host sees the same counts, and the
API refuses with the usual 429 ``rate_limited`` problem and ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.html import escape
from rest_framework.exceptions import Throttled

from cartflow.throttling import address_ident, throttle_give_back, throttle_take

ADDRESS_SCOPE = "sign_in"
USERNAME_SCOPE = "sign_in_username"


def _username_ident(username: str) -> str:
    # Hashed: a Redis key listing shows no usernames. Case-folded: "Ann" and "ann" share one allowance.
    return "user:" + hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]


def sign_in_username_take(*, username: str) -> Callable[[bool], None]:
    """Count a sign-in attempt for ``username``; raise ``Throttled`` when its allowance is spent.

    Returns ``settle(succeeded)``, to be called once the password has been checked.
    """
    ident = _username_ident(username)
    throttle_take(scope=USERNAME_SCOPE, ident=ident)

    def settle(succeeded: bool) -> None:
        if succeeded:
            throttle_give_back(scope=USERNAME_SCOPE, ident=ident)

    return settle


def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """Django admin's login view behind the same two counts as the API sign-in."""
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    try:
        throttle_take(scope=ADDRESS_SCOPE, ident=address_ident(request))
        settle = sign_in_username_take(username=str(request.POST.get("username", "")))
    except Throttled as exc:
        wait = max(1, math.ceil(exc.wait or 1))
        body = f"<h1>Too many sign-in attempts</h1><p>Try again in {escape(wait)} seconds.</p>"
        return HttpResponse(body, status=429, headers={"Retry-After": str(wait)})
    response = admin.site.login(request, extra_context)
    settle(request.user.is_authenticated)
    return response
