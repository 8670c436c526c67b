"""The flash sale's fair queue, in-process: what a join and a poll cost inside Django, with a long queue.

``python -m bench flash_queue [--tickets 1000 --database-url postgres://postgres@127.0.0.1:5432]``

Runs on its own redis-server (free port) and a scratch database ``cartflow_bench_queue`` (dropped at the
end). One flash-sale product whose every unit is held; ``--tickets`` buyers join through
``POST /api/flash-sales/{sku}/queue`` (Django test client, no network), each is polled once, then tokens
come back one by one and the time from the return to the head seeing ``admitted`` is measured.
"""

from __future__ import annotations

import argparse
import os
import time

from bench.stack import django_setup, drop_database, new_stack, recreate_database


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * q))], 3)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench flash_queue")
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args(argv)
    name = "cartflow_bench_queue"
    stack = new_stack(db_url=recreate_database(args.database_url, name))
    stack.start_redis()
    try:
        django_setup(stack)
        _run(args.tickets)
    finally:
        stack.stop_all()
        from django.db import connections

        connections.close_all()
        drop_database(args.database_url, name)
    return 0


def _run(n: int) -> None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from inventory.flashsale import flash_sale_start, flash_tokens_return, flash_tokens_take
    from inventory.models import Product, Stock

    units = 20
    product = Product.objects.create(sku="QUEUE-BENCH", name="Hot thing", price=1000, currency="usd")
    Stock.objects.create(product=product, on_hand=units)
    flash_sale_start(product_id=product.id)
    for i in range(units):  # every unit held by a checkout in progress: buyers are told busy
        flash_tokens_take(holder=f"holder-{i}", lines=[(product.id, 1)])

    joins, polls, tickets = [], [], []
    for _ in range(n):
        client = Client()  # a buyer of its own: joining needs a cart, and a ticket answers only that cart
        r = client.post("/api/cart/items", {"productId": product.id, "quantity": 1}, content_type="application/json")
        assert r.status_code == 201, r.content
        t0 = time.perf_counter()
        r = client.post(f"/api/flash-sales/{product.sku}/queue")
        joins.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 201, r.content
        tickets.append((client, r.json()))
    with CaptureQueriesContext(connection) as queries:
        for client, t in tickets:
            t0 = time.perf_counter()
            r = client.get(t["pollUrl"])
            polls.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
    admissions = []
    for i in range(units):
        flash_tokens_return(holder=f"holder-{i}")
        client, ticket = tickets[i]
        t0 = time.perf_counter()
        body = client.get(ticket["pollUrl"]).json()
        admissions.append((time.perf_counter() - t0) * 1000)
        assert body["admitted"] and body["position"] == i + 1, body  # earlier ones admitted, not started
    print(f"fair queue, in-process (Django test client), {n} tickets waiting for {units} units, {os.cpu_count()} CPUs")
    print(f"  join   p50 {_pct(joins, 0.5):7.3f} ms  p99 {_pct(joins, 0.99):7.3f} ms")
    print(
        f"  poll   p50 {_pct(polls, 0.5):7.3f} ms  p99 {_pct(polls, 0.99):7.3f} ms  "
        f"({len(queries.captured_queries)} queries for {n} polls)"
    )
    print(
        f"  token returned -> head admitted on its next poll: p50 {_pct(admissions, 0.5):7.3f} ms  "
        f"p99 {_pct(admissions, 0.99):7.3f} ms"
    )
