"""Reservations on one hot product: `python -m bench inventory [--seconds S] [--clients 1,8,32,64]`.

For each concurrency level, N client processes (each with its own PostgreSQL connection) call
``reservation_reserve`` for one unit of the same product, in a loop, for S seconds; we print
reservations/s, p50 and p99 latency, and how many calls gave up (contention) — then the ceiling: the
bare conditional ``UPDATE ... WHERE on_hand - reserved >= 1`` from the same number of connections
(pgbench with a custom script when it is on PATH, else psycopg processes), and the ratio.

Runs in a scratch database (``cartflow_bench`` on the server named by DATABASE_URL, default the local
PostgreSQL) created by migrating it, and dropped afterwards unless ``--keep``. Stock is refilled and
reservations deleted between runs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import time
from urllib.parse import urlsplit, urlunsplit

BENCH_DB = "cartflow_bench"
ON_HAND = 1_000_000_000


def _server_url() -> str:
    return os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(_with_db(_server_url(), "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def _setup(url: str) -> int:
    """Create and migrate the scratch DB, then django.setup() against it. Returns the hot product's id."""
    _admin(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{BENCH_DB}"')
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cartflow.settings")
    os.environ.setdefault("CARTFLOW_DEV", "1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from inventory.models import Product, Stock

    product = Product.objects.create(sku="BENCH-HOT", name="Hot product", price=1000)
    Stock.objects.create(product=product, on_hand=ON_HAND)
    return product.id


def _refill(product_id: int) -> None:
    from django.db import connection

    from inventory.models import Reservation, Stock

    Reservation.objects.all().delete()
    Stock.objects.filter(product_id=product_id).update(on_hand=ON_HAND, reserved=0)
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE inventory_stock")
        cur.execute("VACUUM ANALYZE inventory_reservation")


def _client(idx: int, product_id: int, seconds: float, barrier, out) -> None:  # noqa: ANN001
    from django.db import connection

    from inventory.errors import InventoryContention
    from inventory.services import ReserveLine, reservation_reserve

    connection.close()  # never share the parent's socket
    connection.ensure_connection()
    lines = [ReserveLine(product_id, 1)]
    latencies: list[float] = []
    gave_up = 0
    barrier.wait()
    end = time.perf_counter() + seconds
    n = 0
    while True:
        start = time.perf_counter()
        if start >= end:
            break
        try:
            reservation_reserve(lines=lines, holder=f"b{idx}-{n}")
            latencies.append(time.perf_counter() - start)
        except InventoryContention:
            gave_up += 1
        n += 1
    connection.close()
    out.put((latencies, gave_up))


def _run_service(product_id: int, clients: int, seconds: float) -> dict:
    ctx = mp.get_context("fork")
    from django.db import connections

    connections.close_all()
    barrier, out = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [ctx.Process(target=_client, args=(i, product_id, seconds, barrier, out)) for i in range(clients)]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.perf_counter()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r[0])
    return {
        "ok": len(lat),
        "rate": len(lat) / elapsed,
        "p50": _pct(lat, 50),
        "p99": _pct(lat, 99),
        "gave_up": sum(r[1] for r in results),
    }


def _pct(values: list[float], pct: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1] * 1000


_UPDATE = (
    "UPDATE inventory_stock SET reserved = reserved + 1, version = version + 1 "
    "WHERE id = {sid} AND on_hand - reserved >= 1"
)


def _ceiling_pgbench(url: str, stock_id: int, clients: int, seconds: float) -> dict:
    """pgbench running the same UPDATE (bench/ceiling.py's runner)."""
    from bench.ceiling import pgbench_rate

    result = pgbench_rate(url, _UPDATE.format(sid=int(stock_id)) + ";\n", clients, seconds)
    return {"rate": result["rate"], "lat": result["avg_ms"], "tool": result["tool"]}


def _ceiling_psycopg(url: str, stock_id: int, clients: int, seconds: float) -> dict:
    """The same UPDATE from psycopg processes when pgbench is missing (bench/ceiling.py's fallback)."""
    from bench.ceiling import psycopg_rate

    result = psycopg_rate(url, _UPDATE.format(sid=int(stock_id)), clients, seconds)
    return {"rate": result["rate"], "lat": result["avg_ms"], "tool": result["tool"]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench inventory", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each run (default 5)")
    parser.add_argument("--clients", default="1,8,32,64", help="concurrency levels (default 1,8,32,64)")
    parser.add_argument("--no-pgbench", action="store_true", help="measure the ceiling with psycopg processes")
    parser.add_argument("--keep", action="store_true", help=f"keep the scratch database {BENCH_DB}")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.clients.split(",") if x.strip()]

    url = _with_db(_server_url(), BENCH_DB)
    product_id = _setup(url)
    from django.conf import settings

    from inventory.models import Stock

    stock_id = Stock.objects.get(product_id=product_id).id
    use_pgbench = shutil.which("pgbench") is not None and not args.no_pgbench
    print(
        f"hot-product reservations, {args.seconds:g}s per run, {os.cpu_count()} CPU(s), retry budget "
        f"{settings.CARTFLOW_RESERVE_MAX_ATTEMPTS} attempts / {settings.CARTFLOW_RESERVE_MAX_SECONDS:g}s"
    )
    header = (
        f"{'clients':>7} | {'reserve/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'gave up':>7} | "
        f"{'UPDATE/s':>9} {'avg ms':>7} {'tool':>8} | {'ratio':>5}"
    )
    print(header)
    print("-" * len(header))
    try:
        for clients in levels:
            _refill(product_id)
            svc = _run_service(product_id, clients, args.seconds)
            _refill(product_id)
            if use_pgbench:
                ceil = _ceiling_pgbench(url, stock_id, clients, args.seconds)
            else:
                ceil = _ceiling_psycopg(url, stock_id, clients, args.seconds)
            print(
                f"{clients:>7} | {svc['rate']:>9.0f} {svc['p50']:>7.2f} {svc['p99']:>7.2f} {svc['gave_up']:>7} | "
                f"{ceil['rate']:>9.0f} {ceil['lat']:>7.2f} {ceil['tool']:>8} | {svc['rate'] / ceil['rate']:>5.2f}",
                flush=True,
            )
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _admin(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    return 0
