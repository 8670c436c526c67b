"""Throughput of the Stripe emulator over HTTP: ``python -m bench emulator [threads] [n]``.

Each operation is a create + confirm (pm_card_visa) pair with idempotency keys, form-encoded as the
``stripe`` client sends them; webhooks are not sent. Plain httpx, so that only payments/ (the gateway) and
the tests import ``stripe``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx

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
        client = httpx.Client(base_url=server.url, headers={"Authorization": "Bearer sk_test_bench"})
        for i in range(per_thread):
            started = time.perf_counter()
            pi = client.post(
                "/v1/payment_intents",
                data={"amount": "1000", "currency": "usd"},
                headers={"Idempotency-Key": f"c-{n}-{i}"},
            ).raise_for_status().json()
            client.post(
                f"/v1/payment_intents/{pi['id']}/confirm",
                data={"payment_method": "pm_card_visa"},
                headers={"Idempotency-Key": f"k-{n}-{i}"},
            ).raise_for_status()
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
