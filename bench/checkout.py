"""Checkout workloads over HTTP (used by bench/all.py and bench/chaos.py), and the catalog they need.

Carts are filled in-process before a run (``cart_item_add`` on the same Redis the server uses), so a
timed request is only the one being measured: ``checkout/start`` for the hot rush, start + confirm for
the spread checkout, and a ``sold_out`` start for the flash sale. The full checkout is the whole journey
over HTTP: add to cart, start, confirm.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.driver import ClientState, LoopbackClient, Response

HOT_SKU = "BENCH-HOT"
FLASH_SKU = "BENCH-FLASH"
SPREAD_PRODUCTS = 64
BIG_STOCK = 1_000_000


@dataclass
class Catalog:
    hot: int
    flash: int
    spread: list[int]


def catalog_seed(*, hot_stock: int = BIG_STOCK, spread_stock: int = BIG_STOCK, flash_stock: int = 10) -> Catalog:
    """Products for the workloads (in the Django DB this process is set up with); flash pool exhausted."""
    from inventory.flashsale import flash_sale_start, flash_tokens_consume, flash_tokens_take
    from inventory.models import Product, Stock

    def make(sku: str, on_hand: int, price: int = 1000) -> int:
        product = Product.objects.create(sku=sku, name=f"Bench {sku}", price=price, currency="usd")
        Stock.objects.create(product=product, on_hand=on_hand)
        return product.id

    hot = make(HOT_SKU, hot_stock)
    spread = [make(f"BENCH-S{i:02d}", spread_stock, price=500 + i) for i in range(SPREAD_PRODUCTS)]
    flash = make(FLASH_SKU, flash_stock)
    flash_sale_start(product_id=flash)
    # Every token taken and consumed (sold): the pool answers sold_out from now on.
    flash_tokens_take(holder="bench-exhaust", lines=[(flash, flash_stock)])
    flash_tokens_consume(holder="bench-exhaust")
    return Catalog(hot=hot, flash=flash, spread=spread)


def carts_fill(*, product_ids: list[int], count: int) -> list[str]:
    """``count`` guest carts with one unit of one product each (round robin); returns their tokens."""
    from cart.identity import cart_ref_for_token, token_new
    from cart.services import cart_item_add

    tokens = []
    for i in range(count):
        token = token_new()
        cart_item_add(key=cart_ref_for_token(token).key, product_id=product_ids[i % len(product_ids)], quantity=1)
        tokens.append(token)
    return tokens


@dataclass
class Steps:
    """Per-HTTP-request latencies and outcomes of a multi-request workload (start + confirm)."""

    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    completed: int = 0
    checkouts: list[str] = field(default_factory=list)
    by_step: dict[str, list[float]] = field(default_factory=dict)

    def record(self, started: float, response: Response, step: str = "") -> None:
        ms = (time.perf_counter() - started) * 1000
        self.latencies_ms.append(ms)
        if step:
            self.by_step.setdefault(step, []).append(ms)
        if response.status_code >= 400:
            try:
                code = response.json().get("code")
            except ValueError:
                code = None
            self.outcomes[str(code or f"http_{response.status_code}")] += 1


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def start_only(tokens: list[str]) -> Callable[..., Any]:
    """Each call takes a fresh cart and starts its checkout (hot rush)."""

    async def start(http: LoopbackClient, state: ClientState) -> Response:
        token = tokens.pop()
        return await http.post("/api/checkout/start", headers={"X-Cart-Token": token}, json={})

    return start


def start_and_confirm(tokens: list[str], steps: Steps, payment_method: str = "pm_card_visa") -> Callable[..., Any]:
    """Each call takes a fresh cart, starts its checkout and confirms it (spread checkout)."""

    async def checkout(http: LoopbackClient, state: ClientState) -> Response:
        headers = {"X-Cart-Token": tokens.pop()}
        t0 = time.perf_counter()
        response = await http.post("/api/checkout/start", headers=headers, json={})
        steps.record(t0, response)
        if response.status_code not in (200, 201):
            return response
        checkout_id = response.json()["checkoutId"]
        steps.checkouts.append(checkout_id)
        t0 = time.perf_counter()
        body = {"paymentMethodId": payment_method, "checkoutId": checkout_id}
        response = await http.post("/api/checkout/confirm", headers=headers, json=body)
        steps.record(t0, response)
        if response.status_code == 200:
            steps.completed += 1
        return response

    return checkout


def add_start_confirm(product_ids: list[int], steps: Steps, payment_method: str = "pm_card_visa") -> Callable[..., Any]:
    """Each call is one buyer's whole checkout over HTTP: add one unit to a new cart, start, confirm."""

    async def checkout(http: LoopbackClient, state: ClientState) -> Response:
        product_id = product_ids[(state.index + state.sent) % len(product_ids)]
        t0 = time.perf_counter()
        response = await http.post("/api/cart/items", json={"productId": product_id, "quantity": 1})
        steps.record(t0, response, "add")
        if response.status_code != 201:
            return response
        headers = {"X-Cart-Token": response.headers["X-Cart-Token"]}
        t0 = time.perf_counter()
        response = await http.post("/api/checkout/start", headers=headers, json={})
        steps.record(t0, response, "start")
        if response.status_code not in (200, 201):
            return response
        body = {"paymentMethodId": payment_method, "checkoutId": response.json()["checkoutId"]}
        t0 = time.perf_counter()
        response = await http.post("/api/checkout/confirm", headers=headers, json=body)
        steps.record(t0, response, "confirm")
        if response.status_code == 200:
            steps.completed += 1
        return response

    return checkout


def same_cart_start(tokens: list[str]) -> Callable[..., Any]:
    """Each client starts the checkout of its own (flash-sale) cart again and again: ``sold_out``."""

    async def start(http: LoopbackClient, state: ClientState) -> Response:
        token = tokens[state.index % len(tokens)]
        return await http.post("/api/checkout/start", headers={"X-Cart-Token": token}, json={})

    return start


def cart_add(product_ids: list[int], lines_per_cart: int = 50) -> Callable[..., Any]:
    async def add(http: LoopbackClient, state: ClientState) -> Response:
        if state.sent % lines_per_cart == 0:
            state.headers.pop("X-Cart-Token", None)
        product_id = product_ids[(state.index + state.sent) % len(product_ids)]
        response = await http.post(
            "/api/cart/items", json={"productId": product_id, "quantity": 1}, headers=state.headers
        )
        if response.status_code == 201 and "X-Cart-Token" not in state.headers:
            state.headers["X-Cart-Token"] = response.headers["X-Cart-Token"]
        return response

    return add


async def healthz(http: LoopbackClient, state: ClientState) -> Response:
    return await http.get("/healthz")
