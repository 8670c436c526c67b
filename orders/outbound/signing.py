"""``CartFlow-Signature``: Stripe's scheme, so a receiver's Stripe verification code works unchanged.

``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``. The HMAC covers the exact bytes sent; each
attempt signs afresh (a new ``t``), so a receiver's tolerance window never rejects a late retry. The
snippet receivers copy is in docs/webhooks.md; tests check both against each other.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "CartFlow-Signature"
EVENT_ID_HEADER = "CartFlow-Event-Id"


def signature_header(*, body: bytes, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
