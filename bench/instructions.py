"""`python -m bench instructions [--n N]`: CPU instructions the web process spends on one hot checkout start.

On two cores shared with other work, rates and CPU seconds move by tens of percent from one run to the next,
and `bench/cpu.py` counts every gunicorn and PostgreSQL process on the machine. An instruction count does not
move: the same code path executes the same instructions whatever else runs. This runs ``POST
/api/checkout/start`` through Django's full middleware stack (``django.test.Client``, one thread) under
valgrind's callgrind, counting only the measured requests (callgrind's client requests, from a two-line C
helper compiled on the fly), and prints instructions per start. PostgreSQL and Redis are other processes:
their work is not counted, only the web side's (Python, psycopg, redis-py, Django, DRF).

Needs ``valgrind`` (with its headers) and a C compiler; uses the database named by ``DATABASE_URL`` (migrated)
and the Redis of ``REDIS_URL``. Under valgrind a start takes ~0.1 s, so the default 60 starts take a minute or
two. A/B: run it in two worktrees; the counts repeat to about 0.5 %.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_TOGGLE_C = """
#include <valgrind/callgrind.h>
void cf_on(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT; }
void cf_off(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_STOP_INSTRUMENTATION; }
"""
_CHILD = "CARTFLOW_BENCH_INSTRUCTIONS_LIB"


def _measure(n: int, warm: int) -> None:
    """The child under valgrind: carts, warm-up, then ``n`` counted starts."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cartflow.settings")
    os.environ.setdefault("CARTFLOW_DEV", "1")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["CARTFLOW_CHECKOUT_RATE"] = os.environ["CARTFLOW_CART_WRITE_RATE"] = "100000000/min"
    # Every start comes from one client: the per-client hold caps off, as for the rush (bench/stack.py).
    for cap in ("MAX_ACTIVE_CHECKOUTS_PER_CLIENT", "MAX_UNITS_PER_PRODUCT", "FLASH_MAX_UNITS_PER_BUYER"):
        os.environ[f"CARTFLOW_{cap}"] = "0"
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from bench.checkout import carts_fill
    from inventory.models import Product, Stock

    call_command("migrate", verbosity=0)
    product, _ = Product.objects.get_or_create(
        sku="BENCH-INSTR-HOT", defaults={"name": "Hot", "price": 1000, "currency": "usd"}
    )
    Stock.objects.update_or_create(product=product, defaults={"on_hand": 10_000_000})
    tokens = carts_fill(product_ids=[product.id], count=warm + n)
    client = Client()

    def start(token: str) -> None:
        response = client.post(
            "/api/checkout/start", data="{}", content_type="application/json", headers={"X-Cart-Token": token}
        )
        if response.status_code != 201:
            raise SystemExit(f"start answered {response.status_code}: {response.content[:300]!r}")

    for token in tokens[:warm]:
        start(token)
    # A full collection's cost grows with everything the process holds (imports, carts made above): freeze
    # what is there, so the count is the starts' own objects' and repeats between runs and worktrees.
    gc.collect()
    gc.freeze()
    toggle = ctypes.CDLL(os.environ[_CHILD])
    toggle.cf_on()
    for token in tokens[warm:]:
        start(token)
    toggle.cf_off()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench instructions")
    parser.add_argument("--n", type=int, default=60, help="counted starts (default 60)")
    parser.add_argument("--warm", type=int, default=100, help="starts before counting (default 100)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    if os.environ.get(_CHILD):
        _measure(args.n, args.warm)
        return 0
    valgrind, cc = shutil.which("valgrind"), shutil.which("cc") or shutil.which("gcc")
    if not valgrind or not cc:
        print("needs valgrind and a C compiler (apt-get install valgrind gcc)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cf-instr-") as tmp:
        source, lib = Path(tmp) / "toggle.c", Path(tmp) / "toggle.so"
        source.write_text(_TOGGLE_C)
        subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(source)], check=True)
        proc = subprocess.run(
            [valgrind, "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
             f"--callgrind-out-file={tmp}/callgrind.out", sys.executable, "-m", "bench", "instructions",
             "--n", str(args.n), "--warm", str(args.warm)],
            env={**os.environ, _CHILD: str(lib), "PYTHONHASHSEED": "0"},
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
        )  # fmt: skip
    found = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        print(proc.stdout[-2000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        return 1
    per_start = int(found.group(1)) / args.n
    print(f"POST /api/checkout/start: {per_start / 1e6:.3f} M instructions per start (web side, {args.n} starts)")
    if args.json:
        Path(args.json).write_text(json.dumps({"starts": args.n, "instructions_per_start": round(per_start)}))
    return 0
