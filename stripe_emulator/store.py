"""The emulator's in-memory Stripe objects and events: the tables, the lock, the clock and the reads.

One re-entrant lock guards everything; every operation runs under it, so concurrent requests see whole
state changes. Every state change records an event and hands it to ``on_event`` (the webhook dispatcher).
The operations that change objects (the PaymentIntent state machine, refunds) are in state.py.
"""

from __future__ import annotations

import copy
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import invalid, no_such
from .idempotency import IdempotencyStore
from .testcards import TEST_CARDS

API_VERSION = "2026-10-28.endive"
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass
class RequestInfo:
    """Who caused a change: goes into ``event.request`` like Stripe's."""

    request_id: str | None = None
    idempotency_key: str | None = None
    force_decline: bool = False
    base_url: str = ""  # how the caller reached the emulator: 3-D Secure's challenge page is served there


class Store:
    """Every object and event the emulator knows, by id, and how the API reads them."""

    def __init__(self, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.lock = threading.RLock()
        self.on_event = on_event or (lambda event: None)
        self.clock_offset = 0.0
        self.idempotency = IdempotencyStore(self.lock, self.now)
        self.reset()

    # -- housekeeping -----------------------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.clock_offset

    def reset(self) -> None:
        with self.lock:
            self.payment_intents: dict[str, dict[str, Any]] = {}
            self.charges: dict[str, dict[str, Any]] = {}
            self.refunds: dict[str, dict[str, Any]] = {}
            self.payment_methods: dict[str, dict[str, Any]] = {}
            self.events: dict[str, dict[str, Any]] = {}
            self.clock_offset = 0.0
            self.idempotency.reset()

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "payment_intents": len(self.payment_intents),
                "charges": len(self.charges),
                "refunds": len(self.refunds),
                "events": len(self.events),
                "idempotency_keys": len(self.idempotency),
            }

    def _emit(self, event_type: str, obj: dict[str, Any], req: RequestInfo | None) -> dict[str, Any]:
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(self.now()),
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {
                "id": req.request_id if req else None,
                "idempotency_key": req.idempotency_key if req else None,
            },
            "type": event_type,
        }
        self.events[event["id"]] = event
        self.on_event(copy.deepcopy(event))
        return event

    # -- reads ------------------------------------------------------------------------------------------------
    def retrieve(self, kind: str, object_id: str, expand: list[str] | None = None) -> dict[str, Any]:
        with self.lock:
            table, label = self._table(kind)
            obj = table.get(object_id)
            if obj is None:
                raise no_such(label, object_id, param="intent" if kind == "payment_intent" else "id")
            return self.render(obj, expand)

    def list(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Newest first, ``limit`` (1..100, default 10), ``starting_after``/``ending_before``, like Stripe's lists."""
        with self.lock:
            table, label = self._table(kind)
            try:
                limit = int(params.get("limit", 10))
            except (TypeError, ValueError):
                raise invalid("Invalid integer: limit", code="parameter_invalid_integer", param="limit") from None
            if not 1 <= limit <= 100:
                raise invalid("This value must be between 1 and 100 (inclusive).", param="limit")
            items = list(reversed(table.values()))
            if kind == "event":
                types = params.get("types") or ([params["type"]] if params.get("type") else None)
                if types:
                    items = [e for e in items if any(_type_matches(e["type"], t) for t in types)]
            if kind in ("payment_intent", "refund") and params.get("payment_intent"):
                items = [o for o in items if o.get("payment_intent") == params["payment_intent"]]
            after, before = params.get("starting_after"), params.get("ending_before")
            ids = [o["id"] for o in items]
            if after:
                if after not in table:
                    raise no_such(label, after, param="starting_after")
                items = items[ids.index(after) + 1 :] if after in ids else []
                page = items[:limit]
            elif before:
                if before not in table:
                    raise no_such(label, before, param="ending_before")
                items = items[: ids.index(before)] if before in ids else []
                page = items[-limit:]
            else:
                page = items[:limit]
            expand = [e.removeprefix("data.") for e in params.get("expand") or []]
            return {
                "object": "list",
                "data": [self.render(o, expand) for o in page],
                "has_more": len(items) > limit,
                "url": f"/v1/{label}s" if kind != "payment_intent" else "/v1/payment_intents",
            }

    def render(self, obj: dict[str, Any], expand: list[str] | None = None) -> dict[str, Any]:
        out = public(copy.deepcopy(obj))
        for path in expand or []:
            field = path.split(".")[0]
            value = out.get(field)
            if not isinstance(value, str):
                continue
            target = (
                self.charges.get(value)
                or self.payment_intents.get(value)
                or self.payment_methods.get(value)
                or self.refunds.get(value)
            )
            if target is not None:
                out[field] = public(copy.deepcopy(target))
        return out

    def _table(self, kind: str) -> tuple[dict[str, dict[str, Any]], str]:
        tables = {
            "payment_intent": (self.payment_intents, "payment_intent"),
            "charge": (self.charges, "charge"),
            "refund": (self.refunds, "refund"),
            "event": (self.events, "event"),
            "payment_method": (self.payment_methods, "payment_method"),
        }
        return tables[kind]

    # -- lookups for the operations ---------------------------------------------------------------------------
    def _intent(self, pi_id: str, *, param: str = "intent") -> dict[str, Any]:
        pi = self.payment_intents.get(pi_id)
        if pi is None:
            raise no_such("payment_intent", pi_id, param=param)
        return pi

    def _payment_method(self, pm_id: Any) -> dict[str, Any]:
        """Stripe's test shortcuts (``pm_card_visa``) create a new PaymentMethod each time they are used."""
        if not isinstance(pm_id, str):
            raise invalid("Invalid string: payment_method", param="payment_method")
        if pm_id in self.payment_methods:
            return self.payment_methods[pm_id]
        card = TEST_CARDS.get(pm_id)
        if card is None:
            raise no_such("PaymentMethod", pm_id, param="payment_method")
        pm = {
            "id": new_id("pm"),
            "object": "payment_method",
            "billing_details": {"address": None, "email": None, "name": None, "phone": None},
            "card": {
                "brand": card.brand,
                "country": "US",
                "exp_month": 12,
                "exp_year": time.gmtime().tm_year + 3,
                "funding": card.funding,
                "last4": card.last4,
            },
            "created": int(self.now()),
            "customer": None,
            "livemode": False,
            "metadata": {},
            "type": "card",
            "_test_card": pm_id,  # which test card it came from; never rendered (see public)
        }
        self.payment_methods[pm["id"]] = pm
        return pm


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API shows it: without the emulator's own ``_`` fields."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _type_matches(event_type: str, pattern: str) -> bool:
    return event_type == pattern or (pattern.endswith("*") and event_type.startswith(pattern[:-1]))
