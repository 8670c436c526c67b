"""3-D Secure's challenge page: where a PaymentIntent's ``next_action.redirect_to_url.url`` points.

A PaymentIntent confirmed with a 3-D Secure test card and a ``return_url`` waits in ``requires_action``
(state.py). ``GET /_emulator/3ds/{payment_intent}`` shows the shopper a page with two buttons, standing in
for the bank's. Either one POSTs back here and finishes the authentication as the bank would
(``payment_intent_authenticate``: the PaymentIntent succeeds, or goes back to ``requires_payment_method``;
its events go out as webhooks like every other), then sends the browser to the ``return_url`` with the
query Stripe adds: ``payment_intent``, ``payment_intent_client_secret`` and ``redirect_status``.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs, urlencode

from .errors import ApiError
from .state import EmulatorState

PREFIX = "/_emulator/3ds/"

Page = tuple[int, dict[str, str], bytes]  # status, headers, an HTML body


def challenge(state: EmulatorState, method: str, path: str, body: bytes) -> Page:
    """Answer a GET (the page) or a POST (the shopper's choice) for the PaymentIntent named in ``path``."""
    pi_id = path[len(PREFIX) :].strip("/")
    with state.lock:  # read the return_url and authenticate as one step: a double click finds it done
        pi = state.payment_intents.get(pi_id)
        if pi is None:
            return _page(404, "Unknown payment", f"No PaymentIntent {pi_id!r} here.")
        redirect = (pi.get("next_action") or {}).get("redirect_to_url") or {}
        return_url = redirect.get("return_url")
        if method == "GET":
            if pi["status"] != "requires_action":
                return _page(409, "Nothing to authenticate", f"This payment is {pi['status']}.")
            return _page(200, "Authenticate this payment", markup=_form(pi))
        if method != "POST":
            return _page(405, "Method not allowed", "GET shows the page; its buttons POST.")
        outcome = parse_qs(body.decode("utf-8", "replace")).get("outcome", [""])[0]
        if outcome not in ("succeed", "fail"):
            return _page(400, "Bad request", "outcome must be succeed or fail.")
        try:
            state.payment_intent_authenticate(pi_id, outcome)
        except ApiError as exc:
            return _page(409, "Nothing to authenticate", str(exc))
        client_secret = pi["client_secret"]
    status = "succeeded" if outcome == "succeed" else "failed"
    if not return_url:
        return _page(200, f"Authentication {status}", "You can close this page.")
    query = urlencode(
        {"payment_intent": pi_id, "payment_intent_client_secret": client_secret, "redirect_status": status}
    )
    return 303, {"Location": f"{return_url}{'&' if '?' in return_url else '?'}{query}"}, b""


def _form(pi: dict[str, Any]) -> str:
    amount = f"{pi['amount'] / 100:.2f} {pi['currency'].upper()}"
    return (
        f"<p>Stripe emulator: the bank asks you to confirm a payment of <b>{html.escape(amount)}</b>.</p>"
        '<form method="post"><button name="outcome" value="succeed" data-test="approve">Approve</button> '
        '<button name="outcome" value="fail" data-test="fail">Fail authentication</button></form>'
    )


def _page(status: int, title: str, message: str = "", *, markup: str = "") -> Page:
    """An HTML answer: ``message`` is text (escaped), ``markup`` is this module's own HTML."""
    text = html.escape(title)
    content = markup or f"<p>{html.escape(message)}</p>"
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{text}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<style>body{font:16px system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}"
        "button{font:inherit;padding:.5rem 1rem;margin-right:.5rem}</style></head>"
        f"<body><h1>{text}</h1>{content}</body></html>"
    )
    return status, {"Cache-Control": "no-store"}, body.encode()
