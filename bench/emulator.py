"""Throughput of the Stripe emulator through the real stripe client: ``python -m bench emulator [threads] [n]``.

Each operation is a create + confirm (pm_card_visa) pair with idempotency keys; webhooks are not sent. It
lives here, not in stripe_emulator/, because it needs the ``stripe`` package and the emulator does not.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import stripe

from stripe_emulator import EmulatorServer


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench emulator")
    parser.add_argument("threads", type=int, nargs="?", default=8)
    parser.add_argument("per_thread", type=int, nargs="?", default=100, help="create + confirm pairs per thread")
    args = parser.parse_args(argv)
    threads, per_thread = args.threads, args.per_thread
    server = EmulatorServer(port=0).start()
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        client = stripe.StripeClient("sk_test_bench", base_addresses={"api": server.url})
        for i in range(per_thread):
            started = time.perf_counter()
            pi = client.v1.payment_intents.create(
                params={"amount": 1000, "currency": "usd"}, options={"idempotency_key": f"c-{n}-{i}"}
            )
            client.v1.payment_intents.confirm(
                pi.id, params={"payment_method": "pm_card_visa"}, options={"idempotency_key": f"k-{n}-{i}"}
            )
            with lock:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    server.stop()
    latencies.sort()
    total = threads * per_thread
    print(
        f"{total} create+confirm pairs, {threads} threads: {total / elapsed:.0f} pairs/s ({2 * total / elapsed:.0f} "
        f"requests/s); pair latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms"
    )
    return 0
