"""The ceilings a workload is compared with, measured on the same PostgreSQL and Redis in the same run.

`python -m bench ceiling [--seconds 5] [--clients 64]` measures, in a scratch database:

- ``pg order-tx``: the order-shaped transaction — conditional UPDATE of ONE hot stock row, INSERT an order,
  INSERT its line, COMMIT — with pgbench (when on PATH; else the same SQL from psycopg processes);
- ``pg hot UPDATE``: the bare conditional UPDATE of that one row (autocommit);
- ``pg spread UPDATE``: the same UPDATE over 64 rows (``random(1, 64)``);
- ``redis SET`` / ``redis GET``: redis-benchmark (or a redis-py loop) on the given Redis.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

SETUP_SQL = """
DROP TABLE IF EXISTS ceiling_line, ceiling_order, ceiling_stock;
CREATE TABLE ceiling_stock (id int PRIMARY KEY, on_hand int NOT NULL, reserved int NOT NULL DEFAULT 0,
    version int NOT NULL DEFAULT 0, CHECK (reserved <= on_hand));
INSERT INTO ceiling_stock (id, on_hand) SELECT g, 2000000000 FROM generate_series(1, 64) g;
CREATE TABLE ceiling_order (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, total int NOT NULL);
CREATE TABLE ceiling_line (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES ceiling_order(id),
    product_id int NOT NULL, quantity int NOT NULL);
"""
UPDATE = (
    "UPDATE ceiling_stock SET reserved = reserved + 1, version = version + 1 "
    "WHERE id = {pid} AND on_hand - reserved >= 1"
)
SCRIPTS = {
    "pg order-tx": (
        "BEGIN;\n" + UPDATE.format(pid=1) + ";\n"
        "INSERT INTO ceiling_order (created_at, total) VALUES (now(), 1000);\n"
        "INSERT INTO ceiling_line (order_id, product_id, quantity) VALUES (currval('ceiling_order_id_seq'), 1, 1);\n"
        "COMMIT;\n"
    ),
    "pg hot UPDATE": UPDATE.format(pid=1) + ";\n",
    "pg spread UPDATE": "\\set pid random(1, 64)\n" + UPDATE.format(pid=":pid") + ";\n",
}


def prepare(db_url: str) -> None:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(SETUP_SQL)


def pgbench_rate(db_url: str, script: str, clients: int, seconds: float) -> dict[str, Any]:
    """A pgbench script run by ``clients`` connections for ``seconds`` against the database in ``db_url``."""
    parts = urlsplit(db_url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    env = dict(os.environ)
    if parts.password:
        env["PGPASSWORD"] = parts.password
    cmd = [
        "pgbench", "-n", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432),
        "-U", parts.username or "postgres", "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1)),
        "-T", str(max(1, round(seconds))), "-f", path, parts.path.lstrip("/"),
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=seconds + 60).stdout
    finally:
        os.unlink(path)
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    avg = re.search(r"latency average = ([\d.]+) ms", out)
    return {"rate": tps, "p50_ms": None, "avg_ms": float(avg.group(1)) if avg else None, "tool": "pgbench"}


def _psycopg_worker(db_url: str, sql: list[str], seconds: float, barrier, out) -> None:  # noqa: ANN001
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        barrier.wait()
        end, n = time.perf_counter() + seconds, 0
        while time.perf_counter() < end:
            for statement in sql:
                conn.execute(statement.replace(":pid", str(random.randint(1, 64))))
            n += 1
    out.put(n)


def psycopg_rate(db_url: str, script: str, clients: int, seconds: float) -> dict[str, Any]:
    """A pgbench script's statements run by ``clients`` psycopg processes for ``seconds`` (pgbench missing)."""
    sql = [s for s in script.split(";\n") if s.strip() and not s.startswith("\\set")]
    sql = [s.split("\n", 1)[1] if s.startswith("\\set") else s for s in sql]
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [ctx.Process(target=_psycopg_worker, args=(db_url, sql, seconds, barrier, out)) for _ in range(clients)]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.perf_counter()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    return {"rate": total / elapsed, "p50_ms": None, "avg_ms": clients * 1000 / (total / elapsed), "tool": "psycopg"}


def postgres_ceilings(db_url: str, *, clients: int = 64, seconds: float = 5.0) -> dict[str, dict[str, Any]]:
    prepare(db_url)
    runner = pgbench_rate if shutil.which("pgbench") else psycopg_rate
    results = {}
    for name, script in SCRIPTS.items():
        results[name] = runner(db_url, script, clients, seconds)
    return results


def redis_ceilings(redis_url: str, *, clients: int = 64, requests: int = 100_000) -> dict[str, dict[str, Any]]:
    parts = urlsplit(redis_url)
    if shutil.which("redis-benchmark"):
        cmd = [
            "redis-benchmark", "-q", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379),
            "-n", str(requests), "-c", str(clients), "-t", "set,get",
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
        results = {}
        for line in out.replace("\r", "\n").splitlines():
            found = re.match(r"^(SET|GET): ([\d.]+) requests per second(?:, p50=([\d.]+) msec)?", line.strip())
            if found:
                results[f"redis {found.group(1)}"] = {
                    "rate": float(found.group(2)),
                    "p50_ms": float(found.group(3)) if found.group(3) else None,
                    "tool": "redis-benchmark",
                }
        return results
    import redis

    client = redis.Redis.from_url(redis_url)
    n = min(requests, 20_000)
    t0 = time.perf_counter()
    for i in range(n):
        client.set("ceiling", i)
    return {"redis SET": {"rate": n / (time.perf_counter() - t0), "p50_ms": None, "tool": "redis-py (1 client)"}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ceiling", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--redis-url", help="also measure this Redis (it writes keys there: use a scratch one)")
    args = parser.parse_args(argv)
    from bench.stack import drop_database, recreate_database

    server = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    url = recreate_database(server, "cartflow_ceiling")
    try:
        rows = postgres_ceilings(url, clients=args.clients, seconds=args.seconds)
    finally:
        drop_database(server, "cartflow_ceiling")
    if args.redis_url:
        rows.update(redis_ceilings(args.redis_url, clients=args.clients))
    for name, row in rows.items():
        print(f"{name:<18} {row['rate']:>10.0f}/s  ({row['tool']})")
    return 0
