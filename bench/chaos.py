"""`make chaos` (`python -m bench chaos`): the fault campaign, bounded and on loopback only.

Everything it hurts is its own: a private PostgreSQL cluster (pgserver's bundled binaries, a temp dir, a
free port), a private redis-server (AOF on, like a production broker), the Stripe emulator, gunicorn
(2 gthread workers), two Celery workers and beat. While buyers run the spread checkout (start + confirm,
retrying what a storefront retries), it:

- makes the emulator fail 10% of Stripe calls (``http_500``) and lose 2% of responses (``lose_response``);
- kill -9s a gunicorn worker (the master forks a new one) and a Celery worker (restarted like a supervisor);
- restarts PostgreSQL (``pg_ctl -m immediate stop``: a crash, then start);
- stops Redis for 10 s (then starts it again on the same port).

Then, with the faults cleared and no human, it waits (at most 120 s) for every saga to be terminal, and
checks: ``check_invariants`` clean, ``reconcile_payments`` finds no drift, zero oversold units, zero double
charges (succeeded PaymentIntents per order, in the emulator) and no kept money without goods. It prints
what was injected and what was found, and exits non-zero if anything is wrong.

Settings for the run: ``CARTFLOW_RESERVATION_TTL_SECONDS=60`` and ``CARTFLOW_RELEASE_INTERVAL_SECONDS=10``
so checkouts that buyers abandoned mid-fault expire within the window (the defaults hold stock 15 min).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench import checkout as wl
from bench import stack as st

TRANSIENT = {500, 502, 503, 504, 429}


# --- a private PostgreSQL -----------------------------------------------------------------------------


class PrivatePostgres:
    """initdb + pg_ctl from pgserver's bundled PostgreSQL, under a temp dir, on a free loopback port."""

    def __init__(self) -> None:
        import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.dir = Path(tempfile.mkdtemp(prefix="cf-chaos-pg-"))
        self.data = self.dir / "data"
        self.port = st.free_port()
        # PostgreSQL refuses to run as root: pgserver's own system user runs it then (as pgserver does).
        self.user = "pgserver" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user)

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(argv, user=self.user, capture_output=True, text=True, check=check, cwd=self.dir)

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "pg.log"), "-w", "start"
        )

    def crash(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def server_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"


# --- the buyers -----------------------------------------------------------------------------------------


class Buyers:
    """Concurrent buyers: start, then confirm with an Idempotency-Key, retrying what a storefront retries."""

    def __init__(self, url: str, tokens: list[str], clients: int, seconds: float) -> None:
        self.url, self.tokens, self.clients, self.seconds = url, tokens, clients, seconds
        self.outcomes: Counter[str] = Counter()
        self.completed = 0
        self.stop = False

    async def _post(self, http: httpx.AsyncClient, path: str, body: dict, headers: dict, tries: int = 6):  # noqa: ANN202
        for attempt in range(tries):
            try:
                response = await http.post(path, json=body, headers=headers)
            except httpx.HTTPError as exc:
                self.outcomes[f"{path.rsplit('/', 1)[1]}:{type(exc).__name__}"] += 1
            else:
                code = response.status_code
                if code < 400 or code not in TRANSIENT and code != 409:
                    return response
                try:
                    problem = response.json().get("code", "")
                except ValueError:
                    problem = ""
                if code == 409 and problem not in ("checkout_in_progress", "idempotency_request_in_progress"):
                    return response
                self.outcomes[f"{path.rsplit('/', 1)[1]}:{problem or code}"] += 1
            await asyncio.sleep(min(2.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.5))
        return None

    async def _buyer(self, http: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline and self.tokens and not self.stop:
            token = self.tokens.pop()
            headers = {"X-Cart-Token": token}
            start = await self._post(http, "/api/checkout/start", {}, {**headers, "Idempotency-Key": uuid.uuid4().hex})
            if start is None or start.status_code not in (200, 201):
                self.outcomes["start:" + (_code(start) if start is not None else "gave_up")] += 1
                continue
            body = {"paymentMethodId": "pm_card_visa", "checkoutId": start.json()["checkoutId"]}
            confirm = await self._post(
                http, "/api/checkout/confirm", body, {**headers, "Idempotency-Key": uuid.uuid4().hex}
            )
            if confirm is not None and confirm.status_code == 200:
                self.completed += 1
            else:
                self.outcomes["confirm:" + (_code(confirm) if confirm is not None else "gave_up")] += 1

    async def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, timeout=15.0, limits=limits) as http:
            await asyncio.gather(*(self._buyer(http, deadline) for _ in range(self.clients)))

    def run(self) -> None:
        asyncio.run(self._run())


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code") or response.status_code)
    except ValueError:
        return str(response.status_code)


# --- the findings -------------------------------------------------------------------------------------------


def _emulator_intents(stripe_url: str) -> list[dict[str, Any]]:
    headers = {"Authorization": "Bearer sk_test_chaos"}
    intents: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = httpx.get(f"{stripe_url}/v1/payment_intents", params=params, headers=headers, timeout=30).json()
        intents.extend(page["data"])
        if not page.get("has_more"):
            return intents
        params["starting_after"] = page["data"][-1]["id"]


def _refunded_intents(stripe_url: str) -> set[str]:
    events = httpx.get(f"{stripe_url}/_emulator/events", timeout=30).json()["events"]
    return {
        e["data"]["object"].get("payment_intent")
        for e in events
        if e["type"] == "charge.refunded" and e["data"]["object"].get("refunded")
    }


def _findings(stack: st.Stack, initial_stock: int, product_ids: list[int]) -> dict[str, Any]:
    from django.db.models import Count, Sum

    from inventory.models import Stock
    from orders.models import CheckoutSaga, Order, OrderLine

    found: dict[str, Any] = {}
    found["sagas"] = dict(CheckoutSaga.objects.values_list("state").annotate(n=Count("id")))
    found["non_terminal"] = CheckoutSaga.objects.exclude(state__in=CheckoutSaga.TERMINAL).count()
    inv = stack.manage("check_invariants", check=False)
    found["check_invariants"] = "clean" if inv.returncode == 0 else (inv.stdout + inv.stderr)[-2000:]
    rec = stack.manage("reconcile_payments", "--since", "all", check=False)
    found["reconcile_payments"] = "no drift" if rec.returncode == 0 and "agree" in rec.stdout else rec.stdout[-2000:]
    sold = dict(
        OrderLine.objects.filter(order__status__in=["confirmed", "fulfilled"])
        .values_list("product_id")
        .annotate(n=Sum("quantity"))
    )
    oversold = {}
    for row in Stock.objects.filter(product_id__in=product_ids):
        if sold.get(row.product_id, 0) > initial_stock or row.on_hand + sold.get(row.product_id, 0) != initial_stock:
            oversold[row.product_id] = {"sold": sold.get(row.product_id, 0), "on_hand": row.on_hand}
        if row.reserved > row.on_hand or row.on_hand < 0:
            oversold[row.product_id] = {"on_hand": row.on_hand, "reserved": row.reserved}
    found["oversold"] = oversold
    intents = _emulator_intents(stack.stripe_url)
    refunded = _refunded_intents(stack.stripe_url)
    per_order: dict[str, list[dict[str, Any]]] = {}
    for pi in intents:
        per_order.setdefault(pi["metadata"].get("order_id", "?"), []).append(pi)
    found["payment_intents"] = len(intents)
    found["orders_with_several_intents"] = [o for o, pis in per_order.items() if len(pis) > 1]
    found["double_charges"] = [
        o
        for o, pis in per_order.items()
        if sum(pi["status"] == "succeeded" and pi["id"] not in refunded for pi in pis) > 1
    ]
    orders = dict(Order.objects.values_list("public_id", "status"))
    found["money_without_goods"] = [
        o
        for o, pis in per_order.items()
        if any(pi["status"] == "succeeded" and pi["id"] not in refunded for pi in pis)
        and orders.get(o) not in ("confirmed", "fulfilled")
    ]
    found["goods_without_money"] = [
        o
        for o, status in orders.items()
        if status in ("confirmed", "fulfilled")
        and not any(pi["status"] == "succeeded" and pi["id"] not in refunded for pi in per_order.get(o, []))
    ]
    return found


# --- the campaign -------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=80.0, help="how long buyers buy while faults land")
    parser.add_argument("--stock", type=int, default=25, help="units of each of the 64 products")
    parser.add_argument("--settle", type=float, default=120.0, help="how long the system gets to heal alone")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the cluster's directory")
    args = parser.parse_args(argv)

    pg = PrivatePostgres()
    injected: list[str] = []
    t0 = time.monotonic()

    def note(what: str) -> None:
        line = f"[{time.monotonic() - t0:6.1f}s] {what}"
        injected.append(line)
        print(line, flush=True)

    stack = None
    try:
        pg.init()
        pg.start()
        db_url = st.recreate_database(pg.server_url, "cartflow_chaos")
        stack = st.new_stack(
            db_url=db_url,
            extra_env={"CARTFLOW_RESERVATION_TTL_SECONDS": "60", "CARTFLOW_RELEASE_INTERVAL_SECONDS": "10"},
        )
        redis_argv_extra = ["--appendonly", "yes", "--appendfsync", "everysec"]
        _start_redis(stack, redis_argv_extra)
        st.django_setup(stack)
        catalog = wl.catalog_seed(spread_stock=args.stock)
        tokens = wl.carts_fill(product_ids=catalog.spread, count=6000)
        from django.db import connections

        connections.close_all()
        web = stack.start_web(worker_class="gthread", workers=2, threads=4)
        stack.start_emulator(int(stack.stripe_url.rsplit(":", 1)[1]))
        stack.start_worker(name="worker-a", concurrency=2)
        stack.start_worker(name="worker-b", concurrency=2)
        stack.start_beat()
        note(f"stack up: PostgreSQL :{pg.port} (private), Redis :{stack.redis_port} (private), {stack.web_url}")

        buyers = Buyers(stack.web_url, tokens, args.clients, args.seconds)
        load = threading.Thread(target=buyers.run, daemon=True)
        load.start()
        t_load = time.monotonic()

        def at(second: float) -> None:
            time.sleep(max(0.0, t_load + second - time.monotonic()))

        for rule in (
            {"match": "*", "fault": "http_500", "probability": 0.10, "times": 0},
            {"match": "*", "fault": "lose_response", "probability": 0.02, "times": 0},
        ):
            httpx.post(f"{stack.stripe_url}/_emulator/faults", json=rule, timeout=5).raise_for_status()
        note("emulator: http_500 on 10% and lose_response on 2% of Stripe calls (until the load ends)")
        at(8)
        victim = web.children()[0]
        os.kill(victim, signal.SIGKILL)
        note(f"kill -9 gunicorn worker {victim}")
        at(16)
        worker_a = stack.procs["worker-a"]
        os.kill(worker_a.popen.pid, signal.SIGKILL)
        note(f"kill -9 Celery worker-a {worker_a.popen.pid}")
        at(26)
        stack.start_worker(name="worker-a", concurrency=2)
        note("Celery worker-a restarted (as a supervisor would)")
        at(30)
        pg.crash()
        note("PostgreSQL: pg_ctl -m immediate stop (crash)")
        time.sleep(3)
        pg.start()
        note("PostgreSQL: started again (crash recovery)")
        at(48)
        stack.procs["redis"].stop()
        note("Redis: stopped (10 s)")
        time.sleep(10)
        _start_redis(stack, redis_argv_extra)
        note("Redis: started again (same port, AOF kept)")
        load.join(args.seconds + 60)
        buyers.stop = True
        httpx.delete(f"{stack.stripe_url}/_emulator/faults", timeout=5)
        note(f"load over: {buyers.completed} checkouts completed; Stripe faults cleared; waiting for self-healing")
        print(f"buyer-side outcomes (retries included): {dict(buyers.outcomes.most_common())}", flush=True)

        from orders.models import CheckoutSaga

        deadline = time.monotonic() + args.settle
        healed_after = None
        while time.monotonic() < deadline:
            try:
                left = CheckoutSaga.objects.exclude(state__in=CheckoutSaga.TERMINAL).count()
            except Exception:  # noqa: BLE001
                connections.close_all()
                left = -1
            if left == 0:
                healed_after = time.monotonic() - (deadline - args.settle)
                break
            time.sleep(3)
        found = _findings(stack, args.stock, catalog.spread)
        found["healed_after_s"] = round(healed_after, 1) if healed_after is not None else None
        found["checkouts_completed_during_faults"] = buyers.completed
        found["web_worker_respawned"] = len(web.children()) == 2
    finally:
        if stack is not None:
            from django.db import connections

            connections.close_all()
            stack.stop_all()
        if args.keep:
            print(f"kept: {pg.dir} and {stack.logdir if stack else ''}")
            pg.stop()
        else:
            pg.cleanup()

    print("\ninjected:")
    for line in injected:
        print("  " + line)
    print("found:")
    problems = []
    for key, value in found.items():
        print(f"  {key}: {value}")
    if found["non_terminal"]:
        problems.append(f"{found['non_terminal']} sagas not terminal after {args.settle:g} s")
    for key in (
        "oversold",
        "orders_with_several_intents",
        "double_charges",
        "money_without_goods",
        "goods_without_money",
    ):
        if found[key]:
            problems.append(f"{key}: {found[key]}")
    if found["check_invariants"] != "clean":
        problems.append("check_invariants failed")
    if found["reconcile_payments"] != "no drift":
        problems.append("reconcile_payments found drift")
    print("RESULT: " + ("clean" if not problems else "PROBLEMS: " + "; ".join(problems)))
    return 1 if problems else 0


def _start_redis(stack: st.Stack, extra: list[str]) -> None:
    import redis

    stack.spawn(
        "redis",
        [
            shutil.which("redis-server") or "redis-server",
            "--port", str(stack.redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(stack.logdir),
            "--maxclients", "4096", *extra,
        ],
    )  # fmt: skip
    st.wait_until(lambda: redis.Redis(port=stack.redis_port, socket_timeout=0.5).ping(), 10, "redis-server")
