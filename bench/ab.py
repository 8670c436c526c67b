"""`python -m bench ab --set-b NAME=VALUE …`: the hot rush against two servers at once, in alternating slices.

On a shared machine the speed of the CPUs moves by tens of percent within minutes (CPU per start 9–16 ms for
the same code, docs/performance.md), so two `make bench` runs minutes apart compare the machine as much as
the code. Here one stack (database, Redis, emulator, Celery worker) serves two gunicorns: "a" with the
servers' environment as it is, "b" with ``--set-b`` on top (``--set-a`` for a too). The driver runs the hot
rush (``checkout/start``, one product, a fresh cart per request, 64 clients on fresh connections) against
a, b, b, a in every round (ABBA: a drift within the round touches both alike), ``--slice-seconds`` each; the
idle server waits in its event loop meanwhile. It prints each server's median slice rate and the pooled
p50/p95/p99 of its starts, then per round the ratio b / a of the rate and of the p99, with their medians and
how many rounds moved the same way. Settings only: both servers run this checkout's code.

    .venv/bin/python -m bench ab --set-b GUNICORN_CMD_ARGS=--reuse-port --rounds 6
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass

from bench import checkout as wl
from bench import stack as st
from bench.checkout import percentile
from bench.driver import run


@dataclass
class Slice:
    server: str  # "a" or "b"
    round: int
    started: int  # 201s
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.started / self.seconds if self.seconds else 0.0


def _pair(value: str) -> tuple[str, str]:
    name, sep, setting = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {value!r}")
    return name, setting


def summary(slices: list[Slice]) -> dict:
    """Per server: median slice rate and pooled percentiles; per round: b / a of the rate (the round's 201s
    over its seconds) and of the p99; their medians and how many rounds saw b higher."""
    servers = {}
    for name in ("a", "b"):
        mine = [s for s in slices if s.server == name]
        pooled = [ms for s in mine for ms in s.latencies_ms]
        servers[name] = {
            "rate_median": statistics.median(s.rate for s in mine),
            "rates": [round(s.rate, 1) for s in mine],
            **{f"p{p}": percentile(pooled, p) for p in (50, 95, 99)},
        }
    rounds = []
    for number in sorted({s.round for s in slices}):
        a = [s for s in slices if s.round == number and s.server == "a"]
        b = [s for s in slices if s.round == number and s.server == "b"]
        rate_a = sum(s.started for s in a) / sum(s.seconds for s in a)
        rate_b = sum(s.started for s in b) / sum(s.seconds for s in b)
        p99_a = percentile([ms for s in a for ms in s.latencies_ms], 99)
        p99_b = percentile([ms for s in b for ms in s.latencies_ms], 99)
        rounds.append({"round": number, "rate_ratio": rate_b / rate_a, "p99_ratio": p99_b / p99_a})
    return {
        "servers": servers,
        "rounds": rounds,
        "rate_ratio_median": statistics.median(r["rate_ratio"] for r in rounds),
        "rate_b_higher": sum(r["rate_ratio"] > 1 for r in rounds),
        "p99_ratio_median": statistics.median(r["p99_ratio"] for r in rounds),
        "p99_b_lower": sum(r["p99_ratio"] < 1 for r in rounds),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ab", description=__doc__.splitlines()[0])
    parser.add_argument("--set-a", type=_pair, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--set-b", type=_pair, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slice-seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "8")))
    parser.add_argument("--carts-per-slice", type=int, default=1500, help="fresh carts each slice may use")
    args = parser.parse_args(argv)
    if not args.set_a and not args.set_b:
        parser.error("give --set-b (and/or --set-a): the two servers would be the same")

    server = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    db_name = os.environ.get("BENCH_DB", "cartflow_bench")
    stack = st.new_stack(db_url=st.recreate_database(server, db_name))
    slices: list[Slice] = []
    try:
        stack.start_redis()
        st.django_setup(stack)
        catalog = wl.catalog_seed()
        order = ("a", "b", "b", "a")
        tokens = {
            (number, i): wl.carts_fill(product_ids=[catalog.hot], count=args.carts_per_slice)
            for number in range(-1, args.rounds)  # round -1: the warm-up, not counted
            for i in range(4)
        }
        urls = {"a": stack.web_url, "b": f"http://127.0.0.1:{st.free_port()}"}
        for name, pairs in (("a", args.set_a), ("b", args.set_b)):
            stack.start_web(
                worker_class="gthread",
                workers=args.workers,
                threads=args.threads,
                name=f"web-{name}",
                url=urls[name],
                extra_env=dict(pairs),
            )
        stack.start_emulator(int(stack.stripe_url.rsplit(":", 1)[1]))
        stack.start_worker(concurrency=4)
        for number in range(-1, args.rounds):
            for i, name in enumerate(order):
                result = run(
                    base_url=urls[name],
                    request=wl.start_only(tokens[(number, i)]),
                    name=f"{name}{number}",
                    clients=args.clients,
                    seconds=args.slice_seconds if number >= 0 else 1.0,
                    max_requests=args.carts_per_slice,
                )
                if number >= 0:
                    slices.append(Slice(name, number, result.statuses.get(201, 0), result.seconds, result.latencies_ms))
                    errors = dict(result.errors)
                    print(
                        f"round {number} {name}: {result.statuses.get(201, 0) / result.seconds:6.1f} starts/s, "
                        f"p99 {result.p99:7.1f} ms{f', errors {errors}' if errors else ''}",
                        flush=True,
                    )
    finally:
        stack.stop_all()
        st.drop_database(server, db_name)

    result = summary(slices)
    print()
    for name, pairs in (("a", args.set_a), ("b", args.set_b)):
        s = result["servers"][name]
        setting = " ".join(f"{k}={v}" for k, v in pairs) or "(as is)"
        print(
            f"{name}: {setting:<40} rate median {s['rate_median']:6.1f}/s  "
            f"p50 {s['p50']:7.1f}  p95 {s['p95']:7.1f}  p99 {s['p99']:7.1f} ms"
        )
    n = len(result["rounds"])
    print(
        f"b / a by round (medians): rate x{result['rate_ratio_median']:.3f} ({result['rate_b_higher']} of {n} "
        f"higher), p99 x{result['p99_ratio_median']:.3f} ({result['p99_b_lower']} of {n} lower)"
    )
    return 0
