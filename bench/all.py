"""`make bench` (`python -m bench all`): every workload beside its ceiling, in one run, in one table.

It starts what it needs, all on loopback and all its own: a scratch database ``cartflow_bench`` (on the
PostgreSQL named by DATABASE_URL, default the local one; migrated, seeded, dropped afterwards), a private
redis-server, the Stripe emulator (webhooks to the server), gunicorn and one Celery worker. Then, with
64 concurrent clients (bench/driver.py), each run bounded in requests and seconds:

- ``GET /healthz``: the server's cheapest answer (the reference for cart writes and sold_out);
- cart writes: ``POST /api/cart/items``;
- flash-sale ``sold_out``: ``checkout/start`` of carts holding a product whose token pool is exhausted,
  while counting the database's transactions (must stay 0);
- hot-product rush: ``checkout/start`` for ONE product, each client its own (pre-filled) cart;
- spread checkout: start + confirm (``pm_card_visa``) over 64 products; the rate is completed checkouts/s,
  the percentiles are per HTTP request;
- full checkout: add to cart + start + confirm over HTTP, one buyer per call (rate: completed checkouts/s);

then the emulator is restarted as slow and as rate-limited as real Stripe (``--stripe-latency-ms`` 300,
``--stripe-rate-limits`` 25/100, i.e. STRIPE_EMULATOR_LATENCY_MS / STRIPE_EMULATOR_RATE_LIMITS) and the
hot rush and the full checkout run again beside their fast figures, followed by a flash-sale sell-out
(2,000 buyers for 500 units: time to sell out against the floor the confirm rate limit sets, units sold
once, buyer-visible failures, double charges);

then the ceilings on the same PostgreSQL and Redis (bench/ceiling.py), zero oversell and
``check_invariants``; prints one table and writes ``bench/results/<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench import checkout as wl
from bench import flashsale as fs
from bench import stack as st
from bench.ceiling import postgres_ceilings, redis_ceilings
from bench.cpu import Scope, cpu_per_request, cpu_snapshot
from bench.driver import Result
from bench.driver import run as driver_run
from stripe_emulator.realism import parse_rate_limits

RESULTS = Path(__file__).resolve().parent / "results"


_counted: list[st.Stack] = []  # the stack whose processes run() counts (set by main once it exists)


def _scope() -> Scope | None:
    if not _counted:
        return None
    stack = _counted[0]
    database = urlsplit(stack.db_url).path.lstrip("/")
    return Scope(sessions=frozenset(p.popen.pid for p in stack.procs.values()), database=database)


def run(**kwargs: Any) -> Result:
    """``bench.driver.run`` that also records the CPU each process group spent per request (``cpu_ms``):
    the bench's own processes only, so that other work on the machine does not count (bench/cpu.py)."""
    scope = _scope()
    before = cpu_snapshot(scope)
    result = driver_run(**kwargs)
    result.cpu_ms = cpu_per_request(before, cpu_snapshot(scope), result.requests)  # type: ignore[attr-defined]
    return result


def _row(name: str, result: Result | None = None, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"workload": name}
    if result is not None:
        row.update(
            rate=result.rate,
            p50_ms=result.p50,
            p95_ms=result.p95,
            p99_ms=result.p99,
            requests=result.requests,
            seconds=round(result.seconds, 2),
            errors=dict(result.errors),
            cpu_ms=getattr(result, "cpu_ms", {}),
        )
    row.update(kw)
    return row


def _db_transactions(db_url: str) -> int:
    import psycopg

    # An idle backend reports its pending counters only after PostgreSQL's idle-stats interval (10 s; measured
    # here: 50 commits on an idle connection showed up after 6-11 s), so wait that out or the previous
    # workload's commits land in this one's count.
    time.sleep(11)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        name = db_url.rsplit("/", 1)[1]
        value = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(value[0]) if value else 0


def _wait_settled(stack: st.Stack, seconds: float = 30.0) -> None:
    """Let the emulator deliver its webhooks and the worker drain the queue before checking invariants."""
    import redis

    client = redis.Redis.from_url(stack.broker_url)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            hooks = httpx.get(f"{stack.stripe_url}/_emulator/webhooks", timeout=2).json()
            pending = hooks["queued"] + hooks["in_flight"]
        except (httpx.HTTPError, KeyError, ValueError):
            pending = 0
        if client.llen("celery") == 0 and not pending:
            time.sleep(1)
            if client.llen("celery") == 0:
                return
        time.sleep(0.5)


def _oversell() -> list[str]:
    from django.db.models import F

    from inventory.models import Stock

    bad = Stock.objects.filter(reserved__gt=F("on_hand")) | Stock.objects.filter(on_hand__lt=0)
    return [f"stock {s.product_id}: on_hand={s.on_hand} reserved={s.reserved}" for s in bad]


def _restart_emulator(stack: st.Stack, extra_env: dict[str, str]) -> None:
    """The emulator again on the same port (the servers' STRIPE_API_BASE), with ``extra_env`` in its environment.

    The fast run's webhooks are delivered first: a restarted emulator forgets its queue."""
    _wait_settled(stack)
    stack.procs["stripe"].stop()
    saved = stack.env
    stack.env = {**saved, **extra_env}
    try:
        stack.start_emulator(int(stack.stripe_url.rsplit(":", 1)[1]))
    finally:
        stack.env = saved


def _sellout_product(units: int) -> int:
    from inventory.flashsale import flash_sale_start
    from inventory.models import Product, Stock

    product = Product.objects.create(sku="BENCH-SELLOUT", name="Bench sell-out", price=2500, currency="usd")
    Stock.objects.create(product=product, on_hand=units)
    flash_sale_start(product_id=product.id)
    return product.id


def _sold_once(product_id: int, sale: fs.SellOut, charges: dict[str, int]) -> dict[str, Any]:
    """Units sold, and each exactly once: every paid unit is one order with one succeeded PaymentIntent."""
    from django.db.models import Sum

    from orders.models import OrderLine

    paid = ("paid", "confirmed", "fulfilled")
    lines = OrderLine.objects.filter(product_id=product_id, order__status__in=paid)
    paid_units = lines.aggregate(n=Sum("quantity"))["n"] or 0
    paid_orders = set(lines.values_list("order__public_id", flat=True))  # the API's orderId, Stripe's order_id
    sold_orders = set(sale.orders)
    charged = {o: n for o, n in charges.items() if o in paid_orders or o in sold_orders}
    return {
        "paid_units": paid_units,
        "confirmed_answers": len(sale.orders),
        "distinct_orders_confirmed": len(set(sale.orders)),
        "paid_orders_with_one_charge": sum(1 for o in paid_orders if charges.get(o) == 1),
        "double_charges": sum(n - 1 for n in charged.values() if n > 1),
        "confirmed_but_not_paid": len(sold_orders - paid_orders),
        "sold_once": paid_units == len(paid_orders) == len(set(sale.orders))
        and all(charges.get(o) == 1 for o in paid_orders)
        and paid_units <= sale.units,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench all", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0, help="time budget of each HTTP workload")
    parser.add_argument("--worker-class", default=os.environ.get("BENCH_WORKER_CLASS", "gthread"))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "8")))
    parser.add_argument("--log-level", default="WARNING", help="the server's LOG_LEVEL (INFO logs every request)")
    parser.add_argument("--hot-carts", type=int, default=3000, help="request budget of the hot rush")
    parser.add_argument("--spread-carts", type=int, default=2000, help="checkout budget of the spread run")
    parser.add_argument("--full-checkouts", type=int, default=3000, help="checkout budget of each full-checkout run")
    parser.add_argument("--stripe-latency-ms", default="300", help="the realistic emulator's latency")
    parser.add_argument("--stripe-rate-limits", default="25/100", help="the realistic emulator's ENDPOINT/GLOBAL")
    parser.add_argument("--sellout-buyers", type=int, default=2000)
    parser.add_argument("--sellout-units", type=int, default=500)
    parser.add_argument("--sellout-clients", type=int, default=256, help="buyers in flight at once")
    parser.add_argument("--sellout-seconds", type=float, default=90.0, help="time budget of the sell-out")
    parser.add_argument("--ceiling-seconds", type=float, default=5.0)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset: healthz,cart,flash,hot,spread,full,realistic,sellout,ceiling "
        "(realistic = hot rush and full checkout against the realistic emulator)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database and the logs")
    parser.add_argument("--json", type=Path, help="also write the results here (e.g. bench/results/latest.json)")
    args = parser.parse_args(argv)
    only = {x.strip() for x in args.only.split(",") if x.strip()} or {
        "healthz", "cart", "flash", "hot", "spread", "full", "realistic", "sellout", "ceiling"
    }  # fmt: skip
    realistic_env = {
        "STRIPE_EMULATOR_LATENCY_MS": str(args.stripe_latency_ms),
        "STRIPE_EMULATOR_RATE_LIMITS": args.stripe_rate_limits,
    }
    endpoint_rate, global_rate = parse_rate_limits(args.stripe_rate_limits)
    stripe_rate = min(r for r in (endpoint_rate, global_rate, math.inf) if r is not None)

    server = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    db_name = os.environ.get("BENCH_DB", "cartflow_bench")  # a private name when others bench beside you
    db_url = st.recreate_database(server, db_name)
    stack = st.new_stack(db_url=db_url, log_level=args.log_level)
    _counted[:] = [stack]
    rows: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    ceilings: dict[str, dict[str, Any]] = {}
    t_start = time.monotonic()
    try:
        stack.start_redis()
        st.django_setup(stack)
        catalog = wl.catalog_seed()
        hot_tokens = wl.carts_fill(product_ids=[catalog.hot], count=args.hot_carts if "hot" in only else 0)
        spread_tokens = wl.carts_fill(product_ids=catalog.spread, count=args.spread_carts if "spread" in only else 0)
        flash_tokens = wl.carts_fill(product_ids=[catalog.flash], count=args.clients)
        warm_tokens = wl.carts_fill(product_ids=catalog.spread, count=16)
        hot_real_tokens = wl.carts_fill(product_ids=[catalog.hot], count=args.hot_carts if "realistic" in only else 0)
        sellout_id = _sellout_product(args.sellout_units) if "sellout" in only else 0
        sellout_tokens = wl.carts_fill(product_ids=[sellout_id], count=args.sellout_buyers) if sellout_id else []
        web = stack.start_web(worker_class=args.worker_class, workers=args.workers, threads=args.threads)
        stack.start_emulator(int(stack.stripe_url.rsplit(":", 1)[1]))
        stack.start_worker(concurrency=4)
        print(
            f"server: gunicorn {args.worker_class} {args.workers} workers x {args.threads} threads, "
            f"LOG_LEVEL={args.log_level}; {args.clients} clients; {os.cpu_count()} CPUs; logs in {stack.logdir}",
            flush=True,
        )
        url = stack.web_url
        run(base_url=url, request=wl.healthz, name="warm-up", clients=8, seconds=1)
        run(base_url=url, request=wl.start_and_confirm(warm_tokens, wl.Steps()), clients=8, max_requests=16, seconds=10)

        health = None
        if only & {"healthz", "cart", "flash"}:
            health = run(base_url=url, request=wl.healthz, name="healthz", clients=args.clients, seconds=args.seconds)
            rows.append(_row("GET /healthz", health, target="reference"))
        if "cart" in only and health:
            cart = run(
                base_url=url,
                request=wl.cart_add(catalog.spread),
                name="cart",
                clients=args.clients,
                seconds=args.seconds,
            )
            ratio = cart.rate / health.rate
            rows.append(
                _row(
                    "cart writes",
                    cart,
                    ratio=ratio,
                    ratio_to="healthz",
                    target=">= 0.50 x healthz",
                    target_rate=0.5 * health.rate,
                    met=ratio >= 0.5,
                )
            )
        if "flash" in only and health:
            _wait_settled(stack)  # the warm-up's webhooks and outbox tasks must not count as sold_out's queries
            before = _db_transactions(db_url)
            flash = run(
                base_url=url,
                request=wl.same_cart_start(flash_tokens),
                name="flash",
                clients=args.clients,
                seconds=args.seconds,
            )
            queries = _db_transactions(db_url) - before - 1  # minus our own snapshot read
            ratio = flash.rate / health.rate
            only_sold_out = set(flash.errors) == {"sold_out"}
            rows.append(
                _row(
                    "flash sold_out",
                    flash,
                    ratio=ratio,
                    ratio_to="healthz",
                    db_transactions=queries,
                    target=">= 0.80 x healthz, no DB query",
                    target_rate=0.8 * health.rate,
                    db_transactions_per_request=round(queries / max(1, flash.requests), 4),
                    # Background work (a late webhook) may commit a few; a query per request would be thousands.
                    met=ratio >= 0.8 and queries < flash.requests / 100 and only_sold_out,
                )
            )
        if "hot" in only:
            hot = run(
                base_url=url,
                request=wl.start_only(hot_tokens),
                name="hot",
                clients=args.clients,
                seconds=args.seconds,
                max_requests=len(hot_tokens),
            )
            checks["hot_started"] = hot.statuses.get(201, 0)
            rows.append(_row("hot rush start", hot, ok_rate=hot.statuses.get(201, 0) / hot.seconds))
        if "spread" in only:
            steps = wl.Steps()
            spread = run(
                base_url=url,
                request=wl.start_and_confirm(spread_tokens, steps),
                name="spread",
                clients=args.clients,
                seconds=args.seconds,
                max_requests=len(spread_tokens),
            )
            rate = steps.completed / spread.seconds
            p99 = wl.percentile(steps.latencies_ms, 99)
            rows.append(
                {
                    "workload": "spread checkout",
                    "rate": rate,
                    "p50_ms": wl.percentile(steps.latencies_ms, 50),
                    "p95_ms": wl.percentile(steps.latencies_ms, 95),
                    "p99_ms": p99,
                    "requests": len(steps.latencies_ms),
                    "checkouts": spread.requests,
                    "completed": steps.completed,
                    "seconds": round(spread.seconds, 2),
                    "errors": dict(steps.outcomes),
                    "checkout_p50_ms": spread.p50,
                    "checkout_p99_ms": spread.p99,
                    "cpu_ms": _rescale(spread, steps.completed),
                    "target": ">= 100 completed/s, p99 < 500 ms",
                    "target_rate": 100.0,
                    "met": rate >= 100 and p99 < 500,
                }
            )
        full: dict[str, tuple[Result, wl.Steps]] = {}
        if "full" in only:
            full["fast"] = _full_checkout(url, catalog, args)
        sale = None
        if only & {"realistic", "sellout"}:
            _restart_emulator(stack, realistic_env)
            print(f"emulator now realistic: {json.dumps(realistic_env)}", flush=True)
            if "realistic" in only:
                hot_real = run(
                    base_url=url,
                    request=wl.start_only(hot_real_tokens),
                    name="hot-realistic",
                    clients=args.clients,
                    seconds=args.seconds,
                    max_requests=len(hot_real_tokens),
                )
                checks["hot_started"] = checks.get("hot_started", 0) + hot_real.statuses.get(201, 0)
                fast_hot = next((r for r in rows if r["workload"] == "hot rush start"), None)
                rate = hot_real.statuses.get(201, 0) / hot_real.seconds
                fast_rate = fast_hot["ok_rate"] if fast_hot else float("nan")
                rows.append(
                    _row(
                        "hot rush, real. Stripe",
                        hot_real,
                        rate=rate,
                        ratio=rate / fast_rate if fast_hot else float("nan"),
                        ratio_to="hot rush (fast)",
                        target=">= 0.90 x fast, p99 < 400 ms",
                        met=bool(fast_hot) and rate >= 0.9 * fast_rate and hot_real.p99 < 400,
                    )
                )
                full["realistic"] = _full_checkout(url, catalog, args, name="full-realistic")
            if "sellout" in only:
                sale = fs.SellOut(sellout_tokens, args.sellout_units)
                sellout = run(
                    base_url=url,
                    request=sale.buyer,
                    name="sellout",
                    clients=args.sellout_clients,
                    seconds=args.sellout_seconds,
                    max_requests=len(sellout_tokens),
                    timeout=60.0,
                )
                checks["sellout_buyers_answered"] = sellout.requests
        for profile, (result, steps) in full.items():
            rows.append(_full_row(profile, result, steps, full, stripe_rate))
        _wait_settled(stack)
        if sale is not None:
            charges = fs.charges_by_order(stack.stripe_url)
            figures = sale.figures(confirm_rate=endpoint_rate or global_rate or math.inf)
            figures.update(_sold_once(sellout_id, sale, charges))
            checks["sellout"] = figures
            rows.append(_sellout_row(figures))
        worker_pids = web.children()
        checks["web_workers_alive"] = len(worker_pids)
    finally:
        stack.stop_all()

    try:
        from django.db import connections

        from cartflow.invariants import run_all
        from inventory.models import Stock

        violations = {name: v for name, v in run_all().items() if v}
        checks["invariants"] = violations or "clean"
        checks["oversold"] = _oversell()
        if "hot_started" in checks:
            reserved = Stock.objects.get(product_id=catalog.hot).reserved
            checks["hot_reserved_units"] = reserved
            checks["hot_reserved_matches_201s"] = reserved == checks["hot_started"]
        connections.close_all()
        if "ceiling" in only:
            ceilings = postgres_ceilings(db_url, clients=args.clients, seconds=args.ceiling_seconds)
            stack.start_redis()
            ceilings.update(redis_ceilings(stack.redis_url, clients=args.clients))
    finally:
        stack.stop_all()
        if not args.keep:
            from django.db import connections

            connections.close_all()
            st.drop_database(server, db_name)

    order_tx = ceilings.get("pg order-tx", {}).get("rate")
    for row in rows:
        if row["workload"] == "hot rush start":
            ok_rate = row.pop("ok_rate")
            row["rate"] = ok_rate
            row["ratio"] = ok_rate / order_tx if order_tx else float("nan")
            row["ratio_to"] = "pg order-tx"
            row["target"] = ">= 0.25 x order-tx, p99 < 400 ms, zero oversell"
            row["target_rate"] = 0.25 * order_tx if order_tx else None
            row["met"] = bool(
                order_tx
                and row["ratio"] >= 0.25
                and row["p99_ms"] < 400
                and not checks.get("oversold")
                and checks.get("hot_reserved_matches_201s", False)
            )
        if row["workload"] == "spread checkout" and ceilings.get("pg spread UPDATE"):
            row["ratio"] = row["rate"] / ceilings["pg spread UPDATE"]["rate"]
            row["ratio_to"] = "pg spread UPDATE"
    for name, ceiling in ceilings.items():
        rows.append({"workload": f"ceiling: {name}", "rate": ceiling["rate"], "p50_ms": ceiling.get("p50_ms"),
                     "target": ceiling["tool"]})  # fmt: skip

    _print_table(rows)
    _print_comparison(rows, checks)
    ok = checks.get("invariants") == "clean" and not checks.get("oversold")
    print(f"checks: {json.dumps(checks, default=str)}")
    print(f"total wall time {time.monotonic() - t_start:.0f} s")
    document = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "server": {
            "worker_class": args.worker_class,
            "workers": args.workers,
            "threads": args.threads,
            "log_level": args.log_level,
        },
        "clients": args.clients,
        "rows": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows],
        "checks": checks,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    text = json.dumps(document, indent=2, default=str)
    out.write_text(text)
    if args.json:
        args.json.write_text(text)
    print(f"results: {out}")
    return 0 if ok else 1


def _full_checkout(
    url: str, catalog: wl.Catalog, args: argparse.Namespace, name: str = "full"
) -> tuple[Result, wl.Steps]:
    steps = wl.Steps()
    result = run(
        base_url=url,
        request=wl.add_start_confirm(catalog.spread, steps),
        name=name,
        clients=args.clients,
        seconds=args.seconds,
        max_requests=args.full_checkouts,
        timeout=60.0,
    )
    return result, steps


def _full_row(
    profile: str, result: Result, steps: wl.Steps, full: dict[str, tuple[Result, wl.Steps]], stripe_rate: float
) -> dict[str, Any]:
    """One buyer's add + start + confirm; percentiles per checkout, the steps' medians beside them."""
    rate = steps.completed / result.seconds
    row = _row("full checkout" if profile == "fast" else "full checkout, real. Stripe", result)
    row.update(
        rate=rate,
        completed=steps.completed,
        errors=dict(steps.outcomes),
        cpu_ms=_rescale(result, steps.completed),
        step_p50_ms={k: wl.percentile(v, 50) for k, v in steps.by_step.items()},
        step_p99_ms={k: wl.percentile(v, 99) for k, v in steps.by_step.items()},
    )
    if profile == "fast":
        row["target"] = "reference for the realistic run"
        return row
    if "fast" in full:
        fast = full["fast"][1].completed / full["fast"][0].seconds
        reference = min(fast, stripe_rate)
        row.update(ratio=rate / reference, ratio_to=f"min(fast, {stripe_rate:g}/s)", target_rate=0.8 * reference,
                   met=rate >= 0.8 * reference)  # fmt: skip
    row["target"] = f">= 0.80 x min(fast, {stripe_rate:g}/s)"
    return row


def _sellout_row(f: dict[str, Any]) -> dict[str, Any]:
    seconds = f["sell_out_seconds"]
    return {
        "workload": "flash sell-out, real. Str",
        "rate": f["sold"] / seconds if seconds else None,
        "p50_ms": f["confirm_p50_ms"],
        "p99_ms": f["confirm_p99_ms"],
        "ratio": f["ratio_to_floor"],
        "ratio_to": "floor (units / confirm limit)",
        "target": f"sold out <= 1.25 x {f['floor_seconds']:g} s, sold once, 0 double",
        "met": bool(seconds and f["ratio_to_floor"] <= 1.25 and f["sold_once"] and not f["double_charges"]),
        "errors": f["buyer_visible_failures"],
    }


def _print_comparison(rows: list[dict[str, Any]], checks: dict[str, Any]) -> None:
    by_name = {r["workload"]: r for r in rows}
    pairs = [("hot rush start", "hot rush, real. Stripe"), ("full checkout", "full checkout, real. Stripe")]
    if not any(real in by_name for _, real in pairs) and "sellout" not in checks:
        return
    print("\nfast vs realistic Stripe (medians; ratio = realistic / fast):")
    for fast_name, real_name in pairs:
        fast, real = by_name.get(fast_name), by_name.get(real_name)
        if not (fast and real):
            continue
        rate_ratio = real["rate"] / fast["rate"] if fast.get("rate") else float("nan")
        print(
            f"  {fast_name:<15} rate {_fmt(fast['rate'])} -> {_fmt(real['rate'])}/s ({_fmt(rate_ratio, '.2f')}), "
            f"p50 {_fmt(fast['p50_ms'], '.0f')} -> {_fmt(real['p50_ms'], '.0f')} ms, "
            f"p99 {_fmt(fast['p99_ms'], '.0f')} -> {_fmt(real['p99_ms'], '.0f')} ms"
        )
        for step in real.get("step_p50_ms", {}):
            print(
                f"    {step:<13} p50 {_fmt(fast.get('step_p50_ms', {}).get(step), '.0f')} -> "
                f"{_fmt(real['step_p50_ms'][step], '.0f')} ms, p99 "
                f"{_fmt(fast.get('step_p99_ms', {}).get(step), '.0f')} -> {_fmt(real['step_p99_ms'][step], '.0f')} ms"
            )
    f = checks.get("sellout")
    if f:
        when = f"{f['sell_out_seconds']:.1f} s" if f["sell_out_seconds"] else f"not sold out ({f['sold']} sold)"
        print(
            f"  flash sell-out  {f['units']} units: {when}, floor {f['floor_seconds']:g} s "
            f"(ratio {_fmt(f['ratio_to_floor'], '.2f')}, target <= 1.25); paid units {f['paid_units']}, "
            f"sold once: {'yes' if f['sold_once'] else 'NO'}, double charges {f['double_charges']}; "
            f"start p50/p99 {_fmt(f['start_p50_ms'])}/{_fmt(f['start_p99_ms'])} ms, "
            f"confirm p50/p99 {_fmt(f['confirm_p50_ms'])}/{_fmt(f['confirm_p99_ms'])} ms"
        )
        failures = f["buyer_visible_failures"] or "none"
        print(f"    {f['buyers']} buyers; buyer-visible failures (last answer not sold_out / insufficient_stock): "
              f"{failures}; every answer (busy ones retried after Retry-After): {f['answers']}")  # fmt: skip


def _rescale(result: Result, count: int) -> dict[str, float]:
    """CPU per completed checkout instead of per HTTP request."""
    per_request = getattr(result, "cpu_ms", {})
    return {g: round(ms * result.requests / count, 2) for g, ms in per_request.items()} if count else {}


def _fmt(value: Any, spec: str = ".0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'workload':<26} {'rate/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  {'ratio':>6} {'met':>4}  "
        f"{'target':<46} errors"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        errors = ", ".join(f"{k}={v}" for k, v in sorted((r.get("errors") or {}).items(), key=lambda kv: -kv[1]))
        met = "" if "met" not in r else ("yes" if r["met"] else "NO")
        ratio = _fmt(r.get("ratio"), ".2f")
        if r.get("ratio_to"):
            ratio += ""
        print(
            f"{r['workload']:<26} {_fmt(r.get('rate')):>9} {_fmt(r.get('p50_ms'), '.1f'):>8} "
            f"{_fmt(r.get('p95_ms'), '.1f'):>8} {_fmt(r.get('p99_ms'), '.1f'):>8}  {ratio:>6} {met:>4}  "
            f"{r.get('target', ''):<46} {errors or ('' if r.get('rate') is None else 'none')}"
        )
    print("\nCPU ms per request by process (per completed checkout for spread), from /proc:")
    for r in rows:
        if r.get("cpu_ms"):
            parts = ", ".join(f"{g} {ms:.2f}" for g, ms in r["cpu_ms"].items() if g != "total")
            print(f"  {r['workload']:<24} total {r['cpu_ms']['total']:6.2f}  = {parts}")
    _print_budgets(rows)


def _print_budgets(rows: list[dict[str, Any]]) -> None:
    """For each missed rate target: the CPU a request may cost to reach it, beside what it costs now."""
    cpus = os.cpu_count() or 1
    missed = [r for r in rows if r.get("met") is False and r.get("cpu_ms") and r.get("target_rate")]
    if not missed:
        return
    print(f"\nCPU budget of each missed target ({cpus} CPUs shared by every process above):")
    for r in missed:
        total, target = r["cpu_ms"]["total"], r["target_rate"]
        print(
            f"  {r['workload']:<24} {target:6.0f}/s needs <= {cpus * 1000 / target:6.2f} ms per request; "
            f"at {total:.2f} ms the CPUs cap it at {cpus * 1000 / total:.0f}/s"
        )
    print('  Where each gap comes from and what would close it: docs/performance.md.')
