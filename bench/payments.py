"""`python -m bench payments [--n N]`: what a payment costs, in-process, against the Stripe emulator.

Uses the configured database (DATABASE_URL or the dev one; it migrates it), the configured broker, and an
in-process emulator on a free port. Measures, one at a time (latency, not throughput):
- gateway ``payment_intent_create`` and ``payment_intent_confirm`` (HTTP to the emulator + one attempt row);
- webhook intake: a signed POST through Django's full middleware stack (verify + insert + enqueue);
- webhook processing: ``webhook_event_process`` (re-fetch the PaymentIntent + sync + listeners).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid

from stripe_emulator import EmulatorServer, sign


def _stats(name: str, samples: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples)
    row = {
        "what": name,
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 2),
        "max_ms": round(ms[-1], 2),
    }
    print(f"{name:32} n={row['n']:<5} p50={row['p50_ms']:>7} ms  p95={row['p95_ms']:>7} ms  max={row['max_ms']:>7} ms")
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench payments")
    parser.add_argument("--n", type=int, default=200, help="payments to make (default 200)")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cartflow.settings")
    os.environ.setdefault("CARTFLOW_DEV", "1")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client

    from payments.gateway import payment_intent_confirm, payment_intent_create
    from payments.webhooks.handlers import webhook_event_process

    call_command("migrate", verbosity=0)
    server = EmulatorServer(port=0, webhook_url=None, webhook_secret="whsec_bench").start()
    settings.STRIPE_API_BASE = server.url
    settings.STRIPE_WEBHOOK_SECRET = "whsec_bench"
    client = Client()
    create, confirm, intake, process = [], [], [], []
    run = uuid.uuid4().hex[:8]
    try:
        for i in range(args.n):
            order_id = f"bench_{run}_{i}"
            t0 = time.perf_counter()
            intent = payment_intent_create(order_id=order_id, checkout_id="chk", amount=1000, currency="usd")
            t1 = time.perf_counter()
            payment_intent_confirm(
                order_id=order_id, intent_id=intent.intent_id, payment_method="pm_card_visa", attempt=1
            )
            t2 = time.perf_counter()
            create.append(t1 - t0)
            confirm.append(t2 - t1)
        events = [e for e in server.state.events.values() if e["type"] == "payment_intent.succeeded"]
        for event in events:
            body = json.dumps(event)
            t0 = time.perf_counter()
            resp = client.post(
                "/api/webhooks/stripe",
                data=body,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=sign(body, "whsec_bench", int(time.time())),
            )
            intake.append(time.perf_counter() - t0)
            assert resp.status_code == 200, resp.content
        for event in events:
            t0 = time.perf_counter()
            webhook_event_process(event_id=event["id"])
            process.append(time.perf_counter() - t0)
    finally:
        server.stop()
    rows = [
        _stats("gateway payment_intent_create", create),
        _stats("gateway payment_intent_confirm", confirm),
        _stats("webhook intake (POST, 200)", intake),
        _stats("webhook processing (task body)", process),
    ]
    out = os.path.join(os.path.dirname(__file__), "results", "payments.json")
    with open(out, "w") as fh:
        json.dump({"n": args.n, "rows": rows}, fh, indent=2)
    print(f"written {out}")
    return 0
