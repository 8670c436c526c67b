"""`python -m bench flashsale`: a rush of buyers at a few units, with and without flash-sale mode.

It starts its own gunicorn on a free loopback port against a scratch database (``--database-url``,
created and migrated here) and a Redis DB of its own (``--redis-url``; flushed first), and a Stripe
emulator in this process. For each mode it creates a product with ``--units`` units, fills one cart per
buyer (``--buyers``), then every buyer sends ``POST /api/checkout/start`` at once (one request each,
bench/driver.py). It prints, per mode, the rate and p50/p99 of admissions (201) and of rejections
(409 sold_out / 429 flash_sale_busy with the pool; 409 insufficient_stock / 503 inventory_contention
without), and the ratios between the modes.

``SellOut`` below is the other flash-sale workload, run by ``make bench`` (bench/all.py): buyers who start
and confirm (``pm_card_visa``) until the units are sold, against an emulator as slow and as rate-limited
as real Stripe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from bench.driver import ClientState, LoopbackClient, Response, run
from bench.stack import gunicorn_start, process_stop
from stripe_emulator import EmulatorServer

ROOT = Path(__file__).resolve().parent.parent


def _env(args: argparse.Namespace, stripe_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CARTFLOW_DEV="1",
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        CELERY_BROKER_URL=args.redis_url,
        STRIPE_API_BASE=stripe_url,
        STRIPE_SECRET_KEY="",
        CARTFLOW_CART_WRITE_RATE="100000000/min",
        CARTFLOW_CART_CREATE_RATE="100000000/min",
        CARTFLOW_CHECKOUT_RATE="100000000/min",
        # Every simulated buyer comes from 127.0.0.1, one client to the per-client hold caps: off.
        CARTFLOW_MAX_ACTIVE_CHECKOUTS_PER_CLIENT="0",
        CARTFLOW_MAX_UNITS_PER_PRODUCT="0",
        CARTFLOW_FLASH_MAX_UNITS_PER_BUYER="0",
        LOG_LEVEL="WARNING",
    )
    return env


def _manage(env: dict[str, str], *command: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *command], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(command)} failed: {done.stderr[-2000:]}")
    return done.stdout


def _create_database(url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def _fill_carts(url: str, product_id: int, buyers: int) -> list[str]:
    tokens: list[str] = []

    async def add(http: LoopbackClient, state: ClientState) -> Response:
        response = await http.post("/api/cart/items", json={"productId": product_id, "quantity": 1})
        if response.status_code == 201:
            tokens.append(response.headers["X-Cart-Token"])
        return response

    result = run(base_url=url, request=add, name="fill carts", clients=32, seconds=120, max_requests=buyers)
    if len(tokens) != buyers:
        raise RuntimeError(f"filled {len(tokens)} carts of {buyers}: {dict(result.errors)}")
    return tokens


def _rush(url: str, tokens: list[str], name: str) -> dict[str, Any]:
    """Every buyer sends one checkout start at the same moment; latencies split by outcome."""
    by_outcome: dict[str, list[float]] = defaultdict(list)

    async def checkout(http: LoopbackClient, state: ClientState) -> Response:
        t0 = time.perf_counter()
        response = await http.post("/api/checkout/start", json={}, headers={"X-Cart-Token": tokens[state.index]})
        ms = (time.perf_counter() - t0) * 1000
        code = "admitted" if response.status_code == 201 else response.json().get("code", str(response.status_code))
        by_outcome[code].append(ms)
        return response

    result = run(base_url=url, request=checkout, name=name, clients=len(tokens), seconds=300, max_requests=len(tokens))
    out: dict[str, Any] = {"name": name, "seconds": round(result.seconds, 3), "requests": result.requests}
    for outcome, values in sorted(by_outcome.items()):
        ordered = sorted(values)
        out[outcome] = {
            "count": len(ordered),
            "rate_per_s": round(len(ordered) / result.seconds, 1),
            "p50_ms": round(ordered[len(ordered) // 2], 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        }
    return out


def _rejections(stats: dict[str, Any]) -> dict[str, float]:
    values = [stats[k] for k in stats if isinstance(stats[k], dict) and k != "admitted"]
    count = sum(v["count"] for v in values)
    if not count:
        return {"count": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    worst = max(values, key=lambda v: v["count"])
    return {"count": count, "p50_ms": worst["p50_ms"], "p99_ms": max(v["p99_ms"] for v in values)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench flashsale", description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=500)
    parser.add_argument("--units", type=int, default=50)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/cartflow_bench_flash")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 1))
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    _create_database(args.database_url)
    stripe = EmulatorServer(port=0, webhook_url=None, webhook_secret="whsec_bench").start()
    env = _env(args, stripe.url)
    _manage(env, "migrate", "--noinput")
    stamp = int(time.time())
    skus = {"flash": f"BENCH-FLASH-{stamp}", "plain": f"BENCH-PLAIN-{stamp}"}
    catalog = [{"sku": s, "name": s, "price": 1000, "currency": "usd", "onHand": args.units} for s in skus.values()]
    _manage(env, "import_catalog", "-", stdin=json.dumps(catalog))
    _manage(env, "flash_sale", "start", skus["flash"])
    proc, url = gunicorn_start(env=env, workers=args.workers, threads=args.threads)
    try:
        ids = {
            mode: httpx.get(f"{url}/api/products", params={"sku": sku}).json()["results"][0]["id"]
            for mode, sku in skus.items()
        }
        figures = {}
        for mode in ("plain", "flash"):
            tokens = _fill_carts(url, ids[mode], args.buyers)
            figures[mode] = _rush(url, tokens, f"{mode}: {args.buyers} buyers, {args.units} units")
        sold = {mode: args.units - httpx.get(f"{url}/api/products/{ids[mode]}").json()["available"] for mode in ids}
    finally:
        process_stop(proc)
    try:
        work = _server_work(env, tokens[-1])
    finally:
        stripe.stop()
    _report(args, figures, sold)
    print(
        f"\nserver work of one rejected start, in-process (Django test client, no network, {work['n']} requests): "
        f"p50 {work['p50_ms']:.3f} ms, p99 {work['p99_ms']:.3f} ms, {work['queries']} database queries; "
        f"the token-take script alone: p50 {work['lua_p50_ms']:.3f} ms"
    )
    figures["server_work"] = work
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "reserved": sold}, indent=2))
    return 0


def _server_work(env: dict[str, str], token: str, n: int = 1000) -> dict[str, Any]:
    """Time the rejection path inside Django (what a worker spends on it), and count its queries."""
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "cartflow.settings"
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from inventory.errors import FlashSaleBusy, SoldOut
    from inventory.flashsale import flash_tokens_take

    client = Client(HTTP_X_CART_TOKEN=token)
    with CaptureQueriesContext(connection) as queries:
        first = client.post("/api/checkout/start", {}, content_type="application/json")
    assert first.status_code in (409, 429), first.content
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.post("/api/checkout/start", {}, content_type="application/json")
        times.append((time.perf_counter() - t0) * 1000)
    product_id = first.json()["productId"]
    lua = []
    for i in range(n):
        t0 = time.perf_counter()
        try:
            flash_tokens_take(holder=f"bench-{i}", lines=[(product_id, 1)])
        except (SoldOut, FlashSaleBusy):
            pass
        lua.append((time.perf_counter() - t0) * 1000)
    times.sort()
    lua.sort()
    return {
        "n": n,
        "p50_ms": round(times[n // 2], 3),
        "p99_ms": round(times[int(n * 0.99)], 3),
        "queries": len(queries.captured_queries),
        "lua_p50_ms": round(lua[n // 2], 3),
    }


def _report(args: argparse.Namespace, figures: dict[str, Any], sold: dict[str, int]) -> None:
    print(
        f"flash-sale rush: {args.buyers} buyers, {args.units} units, "
        f"{args.workers} gunicorn workers x {args.threads} threads, {os.cpu_count()} CPUs"
    )
    for mode in ("plain", "flash"):
        stats = figures[mode]
        print(f"\n{stats['name']}  (all answered in {stats['seconds']:.2f} s; units reserved: {sold[mode]})")
        for outcome, v in stats.items():
            if isinstance(v, dict):
                print(
                    f"  {outcome:<22} {v['count']:5d}  {v['rate_per_s']:8.1f}/s  "
                    f"p50 {v['p50_ms']:8.2f} ms  p99 {v['p99_ms']:8.2f} ms"
                )
    plain, flash = _rejections(figures["plain"]), _rejections(figures["flash"])
    pa, fa = figures["plain"].get("admitted", {}), figures["flash"].get("admitted", {})
    print("\nratios (without flash mode / with flash mode):")
    if flash["count"]:
        print(
            f"  rejection p50 {plain['p50_ms'] / flash['p50_ms']:.1f}x   "
            f"rejection p99 {plain['p99_ms'] / flash['p99_ms']:.1f}x"
        )
    if pa and fa:
        print(f"  admission p50 {pa['p50_ms'] / fa['p50_ms']:.1f}x   admission p99 {pa['p99_ms'] / fa['p99_ms']:.1f}x")
    print(f"  whole rush   {figures['plain']['seconds'] / figures['flash']['seconds']:.1f}x")


# --- the sell-out against a realistic Stripe (run by bench/all.py) ------------------------------------------
# Final answers that are not a buyer-visible failure: the sale is over for that buyer.
SOLD_OUT_CODES = ("sold_out", "insufficient_stock")
# Answers a storefront retries by itself after their Retry-After (nothing was charged; the same call is safe).
RETRYABLE_CODES = (
    "flash_sale_busy",
    "payment_provider_busy",
    "idempotency_request_in_progress",
    "inventory_contention",
)


class SellOut:
    """Buyers at a flash sale: each starts the checkout of its (pre-filled) cart and, when admitted, confirms
    with ``pm_card_visa``; a busy answer is retried after its Retry-After, as a storefront would.

    ``answers`` counts every answer seen; ``outcomes`` each buyer's last one (``sold``, ``sold_out``, or the
    failure a buyer is left with)."""

    def __init__(self, tokens: list[str], units: int, payment_method: str = "pm_card_visa") -> None:
        self.tokens = list(tokens)
        self.units = units
        self.payment_method = payment_method
        self.started_at: float | None = None
        self.sold_at: list[float] = []  # seconds from the first request to each confirmed order
        self.answers: dict[str, int] = defaultdict(int)
        self.outcomes: dict[str, int] = defaultdict(int)
        self.start_ms: list[float] = []
        self.confirm_ms: list[float] = []
        self.orders: list[str] = []

    async def buyer(self, http: LoopbackClient, state: ClientState) -> Response:
        if self.started_at is None:
            self.started_at = time.perf_counter()
        headers = {"X-Cart-Token": self.tokens.pop()}
        response, code = await self._call(http, "/api/checkout/start", headers, {}, self.start_ms)
        if response.status_code != 201:
            self.outcomes[code] += 1
            return response
        body = {"paymentMethodId": self.payment_method, "checkoutId": response.json()["checkoutId"]}
        response, code = await self._call(http, "/api/checkout/confirm", headers, body, self.confirm_ms)
        if response.status_code == 200:
            self.sold_at.append(time.perf_counter() - self.started_at)
            self.orders.append(response.json()["orderId"])
            code = "sold"
        self.outcomes[code] += 1
        return response

    async def _call(
        self, http: LoopbackClient, path: str, headers: dict[str, str], body: dict[str, Any], times: list[float]
    ) -> tuple[Response, str]:
        for _ in range(60):
            t0 = time.perf_counter()
            response = await http.post(path, headers=headers, json=body)
            times.append((time.perf_counter() - t0) * 1000)
            code = self._note(response)
            if code not in RETRYABLE_CODES:
                return response, code
            await asyncio.sleep(min(5.0, float(response.headers.get("Retry-After") or 1)))
        return response, f"gave_up_after_{code}"

    def _note(self, response: Response) -> str:
        if response.status_code < 400:
            key = str(response.status_code)
        else:
            try:
                key = response.json().get("code") or f"http_{response.status_code}"
            except ValueError:
                key = f"http_{response.status_code}"
        self.answers[key] += 1
        return key

    def figures(self, *, confirm_rate: float) -> dict[str, Any]:
        floor = self.units / confirm_rate
        sold = len(self.sold_at)
        sell_out_s = sorted(self.sold_at)[self.units - 1] if sold >= self.units else None
        return {
            "units": self.units,
            "buyers": sum(self.outcomes.values()),
            "sold": sold,
            "sell_out_seconds": sell_out_s,
            "floor_seconds": floor,
            "ratio_to_floor": sell_out_s / floor if sell_out_s else None,
            "outcomes": dict(self.outcomes),
            "buyer_visible_failures": {
                k: v for k, v in self.outcomes.items() if k != "sold" and k not in SOLD_OUT_CODES
            },
            "answers": dict(self.answers),
            "start_p50_ms": _pct(self.start_ms, 50),
            "start_p99_ms": _pct(self.start_ms, 99),
            "confirm_p50_ms": _pct(self.confirm_ms, 50),
            "confirm_p99_ms": _pct(self.confirm_ms, 99),
        }


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))], 1)


def charges_by_order(stripe_url: str) -> dict[str, int]:
    """Succeeded PaymentIntents per order, from the emulator's event log (its control API is not limited)."""
    events = httpx.get(f"{stripe_url}/_emulator/events", timeout=30).json()["events"]
    succeeded: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if event["type"] == "payment_intent.succeeded":
            obj = event["data"]["object"]
            succeeded[(obj.get("metadata") or {}).get("order_id", "?")].add(obj["id"])
    return {order: len(ids) for order, ids in succeeded.items()}
