"""`make chaos` (`python -m bench chaos`): the fault campaign, bounded and on loopback only.

Everything it hurts is its own: a private PostgreSQL cluster (pgserver's bundled binaries, a temp dir, a
free port, ``fsync=on``), a private redis-server (AOF on, like a production broker), the Stripe emulator
with a realistic profile (``STRIPE_EMULATOR_LATENCY_MS=300``, ``STRIPE_EMULATOR_RATE_LIMITS=25/100``),
gunicorn (2 gthread workers), two Celery workers and beat. While buyers run the spread checkout (start +
confirm, retrying what a storefront retries), it:

- makes the emulator fail 10% of Stripe calls (``http_500``) and lose 2% of responses (``lose_response``);
- kill -9s a gunicorn worker (the master forks a new one) and a Celery worker (restarted like a supervisor);
- crashes PostgreSQL (``pg_ctl -m immediate stop``), then starts it (crash recovery);
- kill -9s Redis, and starts it again on the same port 10 s later (AOF replayed).

Then, with the faults cleared and no human, it waits (at most ``--settle`` s) for every saga to be
terminal, and prints a verdict of checks, each with its figure (:func:`verdict`, a pure function of the
facts collected): progress under faults (checkouts confirmed inside the fault window, at least
``--min-progress``), proof that every fault fired (the emulator's per-rule ``fired`` counts from
``GET /_emulator/faults``; the victims' PIDs gone and replaced; ``pg_postmaster_start_time()`` changed;
Redis ended by SIGKILL, a new ``run_id``), durability settings in force (``SHOW fsync``, Redis AOF), the
invariants (``check_invariants``, ``reconcile_payments``, oversold units, double charges, money without
goods and goods without money), no parked or failed webhook event, and what every buyer was last told
per checkout compared with where its order ended. Non-zero exit status if any check fails.

Settings for the run: ``CARTFLOW_RESERVATION_TTL_SECONDS=60`` and ``CARTFLOW_RELEASE_INTERVAL_SECONDS=10``
so checkouts that buyers abandoned mid-fault expire within the window (the defaults hold stock 15 min).

``--skip``, ``--http-500 0``, ``--redis-signal TERM``, ``--pg-fsync off`` and ``--sabotage`` exist to
prove the verdict can fail: each one removes a fault, or breaks a promise, that a check must then catch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import checkout as wl
from bench import stack as st

TRANSIENT = {500, 502, 503, 504, 429}
SUCCESS_STATES = ("confirmed", "fulfilled")
STRIPE_FAULTS = ("http_500", "lose_response")
SKIPPABLE = ("web-kill", "celery-kill", "pg-crash", "redis-kill")
SABOTAGES = ("refund-confirmed", "no-healing")
# A clean run confirms ~1,600 checkouts (all the stock) in the 80 s window without the emulator's latency
# and rate limit; with 300 ms per Stripe call and 25 calls/s, Stripe alone caps it near 25 a second. 200 is
# a floor a run that works under faults clears by far, and one that stalls for a fault's duration does not.
DEFAULT_MIN_PROGRESS = 200


# --- a private PostgreSQL -----------------------------------------------------------------------------


class PrivatePostgres:
    """initdb + pg_ctl from pgserver's bundled PostgreSQL, under a temp dir, on a free loopback port."""

    def __init__(self, fsync: str = "on") -> None:
        import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.dir = Path(tempfile.mkdtemp(prefix="cf-chaos-pg-"))
        self.data = self.dir / "data"
        self.port = st.free_port()
        self.fsync = fsync
        # PostgreSQL refuses to run as root: a system user runs it then, pgserver's own (created as pgserver
        # creates it) unless the machine already has PostgreSQL's.
        self.user = _postgres_user() if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user)

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(argv, user=self.user, capture_output=True, text=True, check=check, cwd=self.dir)

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        # A crash test is only honest on a cluster that flushes its WAL: with fsync off, an immediate stop
        # could never lose a commit the OS had not written either, and the campaign would prove nothing.
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
            f" -c fsync={self.fsync} -c synchronous_commit=on -c full_page_writes=on"
        )
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

    def postmaster(self) -> dict[str, Any]:
        """The running postmaster: its PID (postmaster.pid), start time and fsync setting, as it reports them."""
        import psycopg

        with psycopg.connect(self.server_url, connect_timeout=5) as conn:
            started, fsync = conn.execute(
                "SELECT pg_postmaster_start_time()::text, current_setting('fsync')"
            ).fetchone()
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return {"pid": pid, "started": started, "fsync": fsync}

    @property
    def server_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"


def _postgres_user() -> str:
    import pwd

    for name in ("pgserver", "postgres"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    from pgserver.utils import ensure_user_exists

    return ensure_user_exists("pgserver").pw_name


# --- the buyers -----------------------------------------------------------------------------------------


@dataclass
class Told:
    """The last thing a buyer heard about one checkout: an HTTP answer (code, body status or problem code)
    or none at all (``code`` 0, ``detail`` the transport error)."""

    code: int
    detail: str
    at: float
    token: str = ""

    @property
    def confirmed(self) -> bool:
        return self.code == 200 and self.detail in SUCCESS_STATES

    @property
    def failed_on_server(self) -> bool:
        """A 5xx, or no answer: the storefront shows an error, so the buyer believes nothing was bought."""
        return self.code >= 500 or self.code == 0


class Buyers:
    """Concurrent buyers: start, then confirm with an Idempotency-Key, retrying what a storefront retries."""

    def __init__(self, url: str, tokens: list[str], clients: int, seconds: float) -> None:
        self.url, self.tokens, self.clients, self.seconds = url, tokens, clients, seconds
        self.outcomes: Counter[str] = Counter()
        self.confirmed_at: list[float] = []  # time.monotonic() of each 200 confirmed/fulfilled
        self.told: dict[str, Told] = {}  # checkout id -> the buyer's last answer for it
        self.stop = False

    async def _post(self, http: httpx.AsyncClient, path: str, body: dict, headers: dict, tries: int = 6):  # noqa: ANN202
        """(response, last): the response to act on (None when retries ran out) and the last answer seen."""
        last = Told(0, "not_sent", time.monotonic())
        for attempt in range(tries):
            try:
                response = await http.post(path, json=body, headers=headers)
            except httpx.HTTPError as exc:
                last = Told(0, type(exc).__name__, time.monotonic())
                self.outcomes[f"{path.rsplit('/', 1)[1]}:{type(exc).__name__}"] += 1
            else:
                code = response.status_code
                last = Told(code, answer_detail(response), time.monotonic())
                if code < 400 or code not in TRANSIENT and code != 409:
                    return response, last
                problem = last.detail if not last.detail.isdigit() else ""
                if code == 409 and problem not in ("checkout_in_progress", "idempotency_request_in_progress"):
                    return response, last
                self.outcomes[f"{path.rsplit('/', 1)[1]}:{problem or code}"] += 1
            await asyncio.sleep(min(2.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.5))
        return None, last

    async def _buyer(self, http: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline and self.tokens and not self.stop:
            token = self.tokens.pop()
            headers = {"X-Cart-Token": token}
            start, _ = await self._post(
                http, "/api/checkout/start", {}, {**headers, "Idempotency-Key": uuid.uuid4().hex}
            )
            if start is None or start.status_code not in (200, 201):
                self.outcomes["start:" + (answer_detail(start) if start is not None else "gave_up")] += 1
                continue
            checkout_id = start.json()["checkoutId"]
            self.told[checkout_id] = Told(start.status_code, "started", time.monotonic(), token)
            body = {"paymentMethodId": "pm_card_visa", "checkoutId": checkout_id}
            confirm, last = await self._post(
                http, "/api/checkout/confirm", body, {**headers, "Idempotency-Key": uuid.uuid4().hex}
            )
            last.token = token
            self.told[checkout_id] = last
            if last.confirmed:
                self.confirmed_at.append(last.at)
            else:
                self.outcomes["confirm:" + (last.detail if confirm is not None else "gave_up")] += 1

    async def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, timeout=15.0, limits=limits) as http:
            await asyncio.gather(*(self._buyer(http, deadline) for _ in range(self.clients)))

    def run(self) -> None:
        asyncio.run(self._run())


def answer_detail(response: httpx.Response) -> str:
    """The body's checkout ``status`` for a success, its problem ``code`` for an error, else the HTTP code."""
    try:
        data = response.json()
    except ValueError:
        return str(response.status_code)
    if not isinstance(data, dict):
        return str(response.status_code)
    return str((data.get("status") if response.status_code < 400 else data.get("code")) or response.status_code)


# --- the verdict: a pure function of the facts ------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    figure: str


def verdict(facts: dict[str, Any], *, min_progress: int) -> list[Check]:
    """Every check of the campaign, each with the figure it judged. ``facts`` is what :func:`main` collects
    (tests/bench/test_chaos_verdict.py builds them by hand); a missing fact fails its check rather than passing."""
    checks: list[Check] = []

    def check(name: str, ok: bool, figure: str) -> None:
        checks.append(Check(name, bool(ok), figure))

    w = facts.get("fault_window") or {}
    n = w.get("confirmed", 0)
    check(
        "progress under faults",
        n >= min_progress,
        f"{n} checkouts confirmed between t={w.get('start', 0):.1f}s and t={w.get('end', 0):.1f}s"
        f" while faults were active (floor {min_progress})",
    )

    fired = facts.get("stripe_faults_fired") or {}
    check(
        "Stripe faults fired",
        all(fired.get(kind, 0) > 0 for kind in STRIPE_FAULTS),
        ", ".join(f"{kind} fired {fired.get(kind, 0)}×" for kind in STRIPE_FAULTS) + " (emulator's fault table)",
    )

    for name, key in (("gunicorn worker killed", "web_kill"), ("Celery worker killed", "celery_kill")):
        k = facts.get(key) or {}
        ok = (
            k.get("victim") is not None
            and k.get("existed") is True
            and k.get("gone") is True
            and k.get("replacement") not in (None, k.get("victim"))
            and k.get("replacement_alive") is True
            and (key == "web_kill" or k.get("replacement_pong") is True)
        )
        check(
            name,
            ok,
            f"victim PID {k.get('victim')} existed={k.get('existed')} gone={k.get('gone')}"
            + (f" (exit {k['exit']})" if "exit" in k else "")
            + f", replaced by PID {k.get('replacement')} alive={k.get('replacement_alive')}"
            + (f" answers ping={k['replacement_pong']}" if "replacement_pong" in k else ""),
        )

    pg = facts.get("pg") or {}
    before, after = pg.get("before") or {}, pg.get("after") or {}
    check(
        "PostgreSQL crashed and restarted",
        bool(before)
        and bool(after)
        and before.get("started") != after.get("started")
        and before.get("pid") != after.get("pid"),
        f"postmaster PID {before.get('pid')} started {before.get('started')}"
        f" → PID {after.get('pid')} started {after.get('started')}",
    )

    r = facts.get("redis") or {}
    check(
        "Redis killed with SIGKILL and restarted",
        r.get("exit") == -signal.SIGKILL
        and r.get("unreachable") is True
        and bool(r.get("run_id_before"))
        and bool(r.get("run_id_after"))
        and r.get("run_id_before") != r.get("run_id_after"),
        f"PID {r.get('pid')} exit {r.get('exit')} (SIGKILL is {-signal.SIGKILL}), unreachable={r.get('unreachable')},"
        f" run_id {str(r.get('run_id_before'))[:8]} → {str(r.get('run_id_after'))[:8]}",
    )

    d = facts.get("durability") or {}
    check(
        "durability settings in force",
        d.get("pg_fsync") == "on" and d.get("redis_appendonly") == "yes",
        f"PostgreSQL fsync={d.get('pg_fsync')}, Redis appendonly={d.get('redis_appendonly')}",
    )

    non_terminal = facts.get("non_terminal")
    check(
        "sagas terminal without a human",
        non_terminal == 0,
        f"{non_terminal} non-terminal, healed {facts.get('healed_after_s')} s after the load; {facts.get('sagas')}",
    )
    check("check_invariants", facts.get("check_invariants") == "clean", str(facts.get("check_invariants")))
    check("reconcile_payments", facts.get("reconcile_payments") == "no drift", str(facts.get("reconcile_payments")))
    for name, key in (
        ("no oversold units", "oversold"),
        ("one PaymentIntent per order", "orders_with_several_intents"),
        ("no double charge", "double_charges"),
        ("no money without goods", "money_without_goods"),
        ("no goods without money", "goods_without_money"),
    ):
        value = facts.get(key)
        check(name, value is not None and not value, f"{len(value) if value is not None else 'unknown'}: {value}")

    hooks = facts.get("webhook_events")
    bad = None if hooks is None else hooks.get("parked", 0) + hooks.get("failed", 0)
    check(
        "no parked or failed webhook event",
        bad == 0,
        f"{bad} parked/failed; statuses {hooks}; none left received after"
        f" {facts.get('webhooks_drained_after_s')} s (None: some left at the deadline)",
    )

    told = facts.get("told") or {}
    final = facts.get("final") or {}
    lied_success, lied_failure, unknown = [], [], []
    for checkout_id, said in told.items():
        end = final.get(checkout_id)
        if end is None:
            unknown.append(checkout_id)
            continue
        if said["confirmed"] and (end["order"] == "cancelled" or end["refunded"]):
            lied_success.append(checkout_id)
        if said["failed_on_server"] and end["charged"] and not end["refunded"] and end["order"] != "fulfilled":
            lied_failure.append(checkout_id)
    told_ok = sum(s["confirmed"] for s in told.values())
    told_5xx = sum(s["failed_on_server"] for s in told.values())
    check(
        "buyers told the truth",
        bool(told) and not lied_success and not lied_failure and not unknown,
        f"{len(told)} checkouts: {told_ok} told confirmed, {told_5xx} told 5xx/no answer;"
        f" {len(lied_success)} told confirmed but refunded/cancelled {lied_success[:5]},"
        f" {len(lied_failure)} told 5xx but charged, unrefunded, unfulfilled {lied_failure[:5]},"
        f" {len(unknown)} unknown to the server {unknown[:5]}",
    )
    return checks


# --- the findings -------------------------------------------------------------------------------------------


def emulator_intents(stripe_url: str) -> list[dict[str, Any]]:
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


def findings(stack: st.Stack, initial_stock: int, product_ids: list[int]) -> dict[str, Any]:
    """Where the money and the stock ended, as the database, the management commands and the emulator tell it
    (also bench/multihost.py's): sagas, invariants, oversold units, intents per order, each checkout's end."""
    from django.db.models import Count, Sum

    from inventory.models import Stock
    from orders.models import CheckoutSaga, Order, OrderLine
    from payments.models import WebhookEvent

    found: dict[str, Any] = {}
    found["sagas"] = dict(CheckoutSaga.objects.values_list("state").annotate(n=Count("id")))
    found["non_terminal"] = CheckoutSaga.objects.exclude(state__in=CheckoutSaga.TERMINAL).count()
    inv = stack.manage("check_invariants", check=False)
    found["check_invariants"] = "clean" if inv.returncode == 0 else (inv.stdout + inv.stderr)[-2000:]
    rec = stack.manage("reconcile_payments", "--since", "all", check=False)
    found["reconcile_payments"] = "no drift" if rec.returncode == 0 and "agree" in rec.stdout else rec.stdout[-2000:]
    sold = dict(
        OrderLine.objects.filter(order__status__in=SUCCESS_STATES).values_list("product_id").annotate(n=Sum("quantity"))
    )
    oversold = {}
    for row in Stock.objects.filter(product_id__in=product_ids):
        if sold.get(row.product_id, 0) > initial_stock or row.on_hand + sold.get(row.product_id, 0) != initial_stock:
            oversold[row.product_id] = {"sold": sold.get(row.product_id, 0), "on_hand": row.on_hand}
        if row.reserved > row.on_hand or row.on_hand < 0:
            oversold[row.product_id] = {"on_hand": row.on_hand, "reserved": row.reserved}
    found["oversold"] = oversold
    intents = emulator_intents(stack.stripe_url)
    refunded = _refunded_intents(stack.stripe_url)
    per_order: dict[str, list[dict[str, Any]]] = {}
    for pi in intents:
        per_order.setdefault(pi["metadata"].get("order_id", "?"), []).append(pi)
    found["payment_intents"] = len(intents)
    found["orders_with_several_intents"] = [o for o, pis in per_order.items() if len(pis) > 1]

    def kept(pis: list[dict[str, Any]]) -> int:  # succeeded and not refunded, in Stripe
        return sum(pi["status"] == "succeeded" and pi["id"] not in refunded for pi in pis)

    found["double_charges"] = [o for o, pis in per_order.items() if kept(pis) > 1]
    orders = dict(Order.objects.values_list("public_id", "status"))
    found["money_without_goods"] = [
        o for o, pis in per_order.items() if kept(pis) and orders.get(o) not in SUCCESS_STATES
    ]
    found["goods_without_money"] = [
        o for o, status in orders.items() if status in SUCCESS_STATES and not kept(per_order.get(o, []))
    ]
    found["webhook_events"] = dict(WebhookEvent.objects.values_list("status").annotate(n=Count("id")))
    # Where every checkout ended: the order's status, and Stripe's word on the money.
    found["final"] = {}
    for checkout_id, order_id, status, payment_status, amount_refunded in CheckoutSaga.objects.values_list(
        "public_id", "order__public_id", "order__status", "order__payment_status", "order__amount_refunded"
    ):
        pis = per_order.get(order_id or "", [])
        found["final"][checkout_id] = {
            "order": status,
            "charged": any(pi["status"] == "succeeded" for pi in pis),
            "refunded": bool(amount_refunded)
            or payment_status == "refunded"
            or any(pi["id"] in refunded for pi in pis),
        }
    return found


def _celery_pong(prefix: str, within: float = 45.0) -> bool:
    """Does a worker whose hostname starts with ``prefix`` answer a broadcast ping (it consumes the broker)?
    A worker answers between tasks and after it has re-subscribed to the broker, so this asks repeatedly."""
    from cartflow.celery import app

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            replies = app.control.ping(timeout=3.0)
        except Exception:  # noqa: BLE001 - broker not reachable yet
            replies = []
        if any(name.startswith(prefix) for reply in replies for name in reply):
            return True
        time.sleep(1)
    return False


def _redis_info(port: int) -> dict[str, Any]:
    import redis

    client = redis.Redis(port=port, socket_timeout=2)
    info = client.info("server")
    return {"run_id": info["run_id"], "pid": info["process_id"], "appendonly": client.config_get("appendonly")}


# --- the campaign -------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=80.0, help="how long buyers buy while faults land")
    parser.add_argument("--stock", type=int, default=25, help="units of each of the 64 products")
    parser.add_argument("--settle", type=float, default=120.0, help="how long the system gets to heal alone")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the cluster's directory")
    parser.add_argument(
        "--min-progress",
        type=int,
        default=int(os.environ.get("CHAOS_MIN_PROGRESS", DEFAULT_MIN_PROGRESS)),
        help="checkouts that must be confirmed while the faults are active (env CHAOS_MIN_PROGRESS)",
    )
    parser.add_argument(
        "--stripe-latency-ms",
        default=os.environ.get("STRIPE_EMULATOR_LATENCY_MS", "300"),
        help="the emulator's STRIPE_EMULATOR_LATENCY_MS (default 300, or that env var)",
    )
    parser.add_argument(
        "--stripe-rate-limits",
        default=os.environ.get("STRIPE_EMULATOR_RATE_LIMITS", "25/100"),
        help="the emulator's STRIPE_EMULATOR_RATE_LIMITS (default 25/100, or that env var)",
    )
    parser.add_argument("--http-500", type=float, default=0.10, help="share of Stripe calls answered 500")
    parser.add_argument("--lose-response", type=float, default=0.02, help="share of Stripe responses lost")
    parser.add_argument(
        "--extra-fault",
        action="append",
        default=[],
        metavar="JSON",
        help='one more emulator fault rule for the load, e.g. \'{"match": "GET /v1/payment_intents/*",'
        ' "fault": "http_500", "times": 0}\'',
    )
    parser.add_argument("--skip", action="append", default=[], choices=SKIPPABLE, help="leave out one fault")
    parser.add_argument("--redis-signal", default="KILL", choices=("KILL", "TERM"), help="how Redis is ended")
    parser.add_argument("--pg-fsync", default="on", choices=("on", "off"))
    parser.add_argument(
        "--sabotage",
        action="append",
        default=[],
        choices=SABOTAGES,
        help="break a promise on purpose: refund, in Stripe, a checkout its buyer was told is confirmed; or stop the"
        " Celery workers and beat when the load ends (nothing heals)",
    )
    args = parser.parse_args(argv)

    pg = PrivatePostgres(fsync=args.pg_fsync)
    injected: list[str] = []
    facts: dict[str, Any] = {}
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
        emulator_env = {
            "STRIPE_EMULATOR_LATENCY_MS": str(args.stripe_latency_ms),
            "STRIPE_EMULATOR_RATE_LIMITS": str(args.stripe_rate_limits),
        }
        stack.start_emulator(int(stack.stripe_url.rsplit(":", 1)[1]), extra_env=emulator_env)
        stack.start_worker(name="worker-a", concurrency=2)
        stack.start_worker(name="worker-b", concurrency=2)
        stack.start_beat()
        pg_before = pg.postmaster()
        redis_before = _redis_info(stack.redis_port)
        facts["durability"] = {
            "pg_fsync": pg_before["fsync"],
            "redis_appendonly": redis_before["appendonly"].get("appendonly"),
        }
        note(
            f"stack up: PostgreSQL :{pg.port} (private, fsync={pg_before['fsync']}), Redis :{stack.redis_port}"
            f" (private, appendonly={facts['durability']['redis_appendonly']}), {stack.web_url};"
            f" emulator {emulator_env}"
        )

        buyers = Buyers(stack.web_url, tokens, args.clients, args.seconds)
        load = threading.Thread(target=buyers.run, daemon=True)
        load.start()
        t_load = time.monotonic()

        def at(second: float) -> None:
            time.sleep(max(0.0, t_load + second - time.monotonic()))

        rules = {}
        specs = [
            ("http_500", {"match": "*", "fault": "http_500", "probability": args.http_500, "times": 0}),
            ("lose_response", {"match": "*", "fault": "lose_response", "probability": args.lose_response, "times": 0}),
        ]
        specs += [(f"extra {i}", json.loads(text)) for i, text in enumerate(args.extra_fault, 1)]
        for label, rule in specs:
            response = httpx.post(f"{stack.stripe_url}/_emulator/faults", json=rule, timeout=5)
            response.raise_for_status()
            rules[response.json()["id"]] = label
        fault_start = time.monotonic()
        note(f"emulator: http_500 on {args.http_500:.0%} and lose_response on {args.lose_response:.0%} of Stripe calls")

        at(8)
        kill: dict[str, Any] = {"victim": None}
        if "web-kill" not in args.skip:
            before = web.children()
            victim = before[0]
            kill = {"victim": victim, "before": before, "existed": Path(f"/proc/{victim}").exists()}
            os.kill(victim, signal.SIGKILL)
            note(f"kill -9 gunicorn worker {victim}")
        facts["web_kill"] = kill

        at(16)
        worker_a = stack.procs["worker-a"]
        ckill: dict[str, Any] = {"victim": None}
        if "celery-kill" not in args.skip:
            victim = worker_a.popen.pid
            ckill = {"victim": victim, "existed": worker_a.alive()}
            os.kill(victim, signal.SIGKILL)
            try:
                worker_a.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
            ckill["exit"] = worker_a.popen.returncode
            ckill["gone"] = worker_a.popen.returncode is not None
            note(f"kill -9 Celery worker-a {victim}")
        facts["celery_kill"] = ckill

        at(26)
        if "celery-kill" not in args.skip:
            ckill["replacement"] = stack.start_worker(name="worker-a", concurrency=2).popen.pid
            note(f"Celery worker-a restarted (as a supervisor would): PID {ckill['replacement']}")

        at(30)
        if "pg-crash" not in args.skip:
            pg.crash()
            note(f"PostgreSQL: pg_ctl -m immediate stop (crash of postmaster {pg_before['pid']})")
            time.sleep(3)
            pg.start()
            note("PostgreSQL: started again (crash recovery)")
        facts["pg"] = {"before": pg_before, "after": pg.postmaster()}

        at(48)
        redis_facts: dict[str, Any] = {"run_id_before": redis_before["run_id"], "pid": redis_before["pid"]}
        if "redis-kill" not in args.skip:
            proc = stack.procs["redis"]
            sig = signal.SIGKILL if args.redis_signal == "KILL" else signal.SIGTERM
            os.kill(proc.popen.pid, sig)
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                proc.stop(signal.SIGKILL)
            redis_facts["exit"] = proc.popen.returncode
            note(f"Redis: kill -{args.redis_signal} {proc.popen.pid} (exit {proc.popen.returncode}), down for 10 s")
            import redis as redis_lib

            try:
                redis_lib.Redis(port=stack.redis_port, socket_timeout=1).ping()
                redis_facts["unreachable"] = False
            except redis_lib.ConnectionError:
                redis_facts["unreachable"] = True
            time.sleep(10)
            _start_redis(stack, redis_argv_extra)
            note("Redis: started again (same port, AOF replayed)")
        redis_facts["run_id_after"] = _redis_info(stack.redis_port)["run_id"]
        facts["redis"] = redis_facts

        load.join(args.seconds + 60)
        buyers.stop = True
        table = httpx.get(f"{stack.stripe_url}/_emulator/faults", timeout=5).json()["faults"]
        httpx.delete(f"{stack.stripe_url}/_emulator/faults", timeout=5)
        fault_end = time.monotonic()
        fired: Counter[str] = Counter()
        for rule in table:
            if rule["id"] in rules:
                fired[rules[rule["id"]]] += rule["fired"]
        facts["stripe_faults_fired"] = dict(fired)
        facts["fault_window"] = {
            "start": fault_start - t0,
            "end": fault_end - t0,
            "confirmed": sum(fault_start <= t <= fault_end for t in buyers.confirmed_at),
        }
        note(
            f"load over: {len(buyers.confirmed_at)} checkouts confirmed; Stripe faults cleared"
            f" (fired {dict(fired)}); waiting for self-healing"
        )
        print(f"buyer-side outcomes (retries included): {dict(buyers.outcomes.most_common())}", flush=True)

        if ckill["victim"] is not None and "no-healing" in args.sabotage:
            ckill["replacement_alive"] = stack.procs["worker-a"].alive()
            ckill["replacement_pong"] = _celery_pong("worker-a-")
        if "refund-confirmed" in args.sabotage:
            # An out-of-band refund (as from Stripe's dashboard) of a checkout its buyer was told is confirmed.
            from orders.models import CheckoutSaga

            connections.close_all()
            victim_id = next(c for c, s in buyers.told.items() if s.confirmed)
            intent = CheckoutSaga.objects.filter(public_id=victim_id).values_list("payment_intent_id", flat=True)[0]
            response = httpx.post(
                f"{stack.stripe_url}/v1/refunds",
                data={"payment_intent": intent},
                headers={"Authorization": "Bearer sk_test_chaos"},
                timeout=30,
            )
            note(f"sabotage: refunded {intent} of {victim_id}, whose buyer was told confirmed ({response.status_code})")
        if "no-healing" in args.sabotage:
            for name in [n for n in stack.procs if n.startswith(("worker", "beat"))]:
                stack.procs[name].stop()
            note("sabotage: Celery workers and beat stopped")

        from orders.models import CheckoutSaga
        from payments.models import WebhookEvent

        settle_start = time.monotonic()
        deadline = settle_start + args.settle
        healed_after = drained_after = None
        while time.monotonic() < deadline:
            # Healed: every saga terminal. Drained too: no webhook event still waiting to be processed (an
            # event whose task the broker lost waits for the task's visibility timeout: the run stops waiting
            # at the deadline and reports what is left).
            try:
                sagas_left = CheckoutSaga.objects.exclude(state__in=CheckoutSaga.TERMINAL).count()
                events_left = WebhookEvent.objects.filter(status=WebhookEvent.RECEIVED).count()
            except Exception:  # noqa: BLE001
                connections.close_all()
                sagas_left = events_left = -1
            if sagas_left == 0 and healed_after is None:
                healed_after = time.monotonic() - settle_start
            if sagas_left == 0 and events_left == 0:
                drained_after = time.monotonic() - settle_start
                break
            time.sleep(3)
        if ckill["victim"] is not None and "no-healing" not in args.sabotage:
            ckill["replacement_alive"] = stack.procs["worker-a"].alive()
            ckill["replacement_pong"] = _celery_pong("worker-a-")
        facts.update(findings(stack, args.stock, catalog.spread))
        facts["healed_after_s"] = round(healed_after, 1) if healed_after is not None else None
        facts["webhooks_drained_after_s"] = round(drained_after, 1) if drained_after is not None else None
        if kill["victim"] is not None:
            after = web.children()
            kill["gone"] = kill["victim"] not in after
            kill["replacement"] = next((p for p in after if p not in kill["before"]), None)
            kill["replacement_alive"] = bool(kill["replacement"]) and Path(f"/proc/{kill['replacement']}").exists()
        for name in ("worker-a", "worker-b"):
            proc = stack.procs[name]
            if not proc.alive() and "no-healing" not in args.sabotage:
                print(f"Celery {name} (PID {proc.popen.pid}) exited {proc.popen.returncode}; its log ends:")
                print(proc.tail(1500), flush=True)
        facts["told"] = {
            c: {"confirmed": s.confirmed, "failed_on_server": s.failed_on_server} for c, s in buyers.told.items()
        }
        told_counts = Counter(f"{s.code} {s.detail}" for s in buyers.told.values())
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
    print(f"buyers' last answer per checkout: {dict(told_counts.most_common())}")
    print(f"PaymentIntents in the emulator: {facts.get('payment_intents')}")
    print("verdict:")
    checks = verdict(facts, min_progress=args.min_progress)
    for c in checks:
        print(f"  {'PASS' if c.ok else 'FAIL'}  {c.name}: {c.figure}")
    failed = [c.name for c in checks if not c.ok]
    print("RESULT: " + ("clean" if not failed else "FAILED: " + "; ".join(failed)))
    return 1 if failed else 0


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
