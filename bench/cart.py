"""`python -m bench cart`: cart writes through HTTP next to /healthz and raw Redis, measured in one run.

Without ``--url`` it migrates and seeds the dev database (idempotent, like `make run`), starts gunicorn
on a free loopback port with the cart throttle lifted (``CARTFLOW_CART_WRITE_RATE``) and short-lived
carts (``CARTFLOW_CART_TTL_SECONDS=900``), and stops it afterwards. Then it drives, with
bench/driver.py, ``GET /healthz`` (the process floor: no database, no Redis) and ``POST /api/cart/items``
(one Lua script plus a catalog lookup and a stock read per request) with ``--clients`` concurrent
clients for ``--seconds`` each, and measures raw Redis with redis-benchmark (or a redis-py loop).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.checkout import cart_add, healthz
from bench.driver import Result, run
from bench.stack import gunicorn_start, process_stop

ROOT = Path(__file__).resolve().parent.parent
CART_LUA = "redis.call('HINCRBY', KEYS[1], ARGV[1], 1); redis.call('HINCRBY', KEYS[1], 'version', 1); " + (
    "redis.call('PEXPIRE', KEYS[1], 600000); return 1"
)


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CARTFLOW_DEV", "1")
    env["CARTFLOW_CART_WRITE_RATE"] = "100000000/min"
    env["CARTFLOW_CART_CREATE_RATE"] = "100000000/min"  # every simulated buyer starts a cart from 127.0.0.1
    env.setdefault("CARTFLOW_CART_TTL_SECONDS", "900")
    env.setdefault("LOG_LEVEL", "WARNING")
    return env


def _start_server(workers: int) -> tuple[subprocess.Popen, str]:
    env = _server_env()
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True)
    return gunicorn_start(env=env, workers=workers, worker_class="sync")


def _products(url: str) -> list[int]:
    body = httpx.get(f"{url}/api/products", timeout=10).json()
    ids = [p["id"] for p in body["results"] if p["currency"] == "usd" and p["available"] >= 100 and not p["flashSale"]]
    if not ids:
        raise RuntimeError("no usd product with 100+ units available: run `manage.py seed_demo`")
    return ids[:8]


def _redis_url(args: argparse.Namespace) -> str:
    if args.redis_url:
        return args.redis_url
    from cartflow import servicefinder

    return servicefinder.redis_url()


def _redis_benchmark(redis_url: str, requests: int, clients: int) -> list[dict[str, Any]]:
    """redis-benchmark's SET, HSET and an EVALSHA-like cart script (HINCRBY x2 + PEXPIRE) on the same Redis."""
    parts = urlsplit(redis_url)
    db = (parts.path or "/0").lstrip("/") or "0"
    base = ["redis-benchmark", "-q", "-n", str(requests), "-c", str(clients), "--dbnum", db]
    base += ["-s", parts.path] if parts.scheme == "unix" else ["-h", parts.hostname or "127.0.0.1"]
    if parts.scheme != "unix":
        base += ["-p", str(parts.port or 6379)]
    out: list[dict[str, Any]] = []
    runs = [
        ("redis SET", ["-t", "set"]),
        ("redis HSET", ["-t", "hset"]),
        ("redis cart-lua", ["EVAL", CART_LUA, "1", "cart:{bench}", "42"]),
    ]
    for name, extra in runs:
        text = subprocess.run(base + extra, capture_output=True, text=True, timeout=300).stdout
        line = text.strip().splitlines()[-1] if text.strip() else ""
        line = line.split("\r")[-1]
        rate = re.search(r"([\d.]+) requests per second", line)
        p50 = re.search(r"p50=([\d.]+) msec", line)
        out.append(
            {
                "name": name,
                "rate": float(rate.group(1)) if rate else None,
                "p50_ms": float(p50.group(1)) if p50 else None,
            }
        )
    return out


def _redis_py_loop(redis_url: str, requests: int) -> list[dict[str, Any]]:
    """Fallback without redis-benchmark: one client, pipelines of 100 HSETs, and single EVALs."""
    import redis

    client = redis.Redis.from_url(redis_url)
    t0 = time.perf_counter()
    for start in range(0, requests, 100):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 100, requests)):
            pipe.hset("bench:{hset}", str(i % 100), i)
        pipe.execute()
    pipelined = requests / (time.perf_counter() - t0)
    script = client.register_script(CART_LUA)
    n = min(requests, 20000)
    t0 = time.perf_counter()
    for _ in range(n):
        script(keys=["cart:{bench}"], args=["42"])
    single = n / (time.perf_counter() - t0)
    client.delete("bench:{hset}")
    return [
        {"name": "redis-py HSET (pipelined x100)", "rate": round(pipelined, 1), "p50_ms": None},
        {"name": "redis-py cart-lua (1 client)", "rate": round(single, 1), "p50_ms": None},
    ]


def _redis_cleanup(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.delete("key:__rand_int__", "myhash", "cart:{bench}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cart", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (loopback only); default: start gunicorn here")
    parser.add_argument("--redis-url", help="Redis to measure raw (default: the dev Redis)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="per HTTP scenario")
    parser.add_argument("--workers", type=int, default=max(2, 2 * (os.cpu_count() or 1)), help="gunicorn workers")
    parser.add_argument("--redis-requests", type=int, default=100_000)
    parser.add_argument("--lines-per-cart", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    proc = None
    url = args.url
    if url is None:
        proc, url = _start_server(args.workers)
    try:
        products = _products(url)
        run(base_url=url, request=healthz, name="warm-up", clients=8, seconds=1)
        health = run(base_url=url, request=healthz, name="GET /healthz", clients=args.clients, seconds=args.seconds)
        cart = run(
            base_url=url,
            request=cart_add(products, args.lines_per_cart),
            name="POST cart/items",
            clients=args.clients,
            seconds=args.seconds,
        )
    finally:
        if proc is not None:
            process_stop(proc)

    redis_url = _redis_url(args)
    if shutil.which("redis-benchmark"):
        raw = _redis_benchmark(redis_url, args.redis_requests, args.clients)
    else:
        raw = _redis_py_loop(redis_url, args.redis_requests)
    _redis_cleanup(redis_url)
    _report(args, url, health, cart, raw)
    return 0 if cart.requests and not _unexpected(cart) else 1


def _unexpected(result: Result) -> int:
    return sum(n for code, n in result.errors.items())


def _report(args: argparse.Namespace, url: str, health: Result, cart: Result, raw: list[dict[str, Any]]) -> None:
    print(f"cart benchmark against {url} ({args.clients} clients, {args.seconds:g} s each, {os.cpu_count()} CPUs)")
    print(health.summary())
    print(cart.summary())
    ratio = cart.rate / health.rate if health.rate else float("nan")
    print(f"cart writes / healthz throughput: {ratio:.2f}")
    for row in raw:
        p50 = f"  p50 {row['p50_ms']:.3f} ms" if row.get("p50_ms") is not None else ""
        print(f"{row['name']:<30} {row['rate'] or float('nan'):12.1f} req/s{p50}")
    if args.json:
        figures = {"healthz": health.as_dict(), "cart": cart.as_dict(), "ratio": round(ratio, 3), "redis": raw}
        args.json.write_text(json.dumps(figures, indent=2))
