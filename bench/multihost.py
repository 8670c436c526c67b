"""`make multihost` (`python -m bench multihost`): two web hosts behind a real load balancer, on this machine.

It starts, all on loopback and all its own (docs/deploy.md describes the production layout it imitates):

- a scratch PostgreSQL database (``MULTIHOST_DB``, default ``cartflow_multihost``) on the server of
  ``DATABASE_URL``, migrated (which also creates the beat schedules) and dropped at the end;
- a private redis-server: carts, throttles, catalog cache and the shared Stripe budget, as every host shares them;
- a RabbitMQ virtual host of its own on the broker at 127.0.0.1:5672 (``rabbitmqctl add_vhost``, deleted at the
  end), so its queues never meet anyone else's;
- the Stripe emulator with the realistic profile (``STRIPE_EMULATOR_LATENCY_MS=300``,
  ``STRIPE_EMULATOR_RATE_LIMITS=25/100``), posting its webhooks through the balancer, as Stripe would;
- two gunicorn web servers (``cartflow/gunicorn_conf.py``, as ``scripts/run.sh`` starts them) on two ports, with
  ``CARTFLOW_TRUSTED_PROXIES=1``, and HAProxy (Debian's ``haproxy``) in front, health-checking ``/readyz``;
- two Celery workers consuming from RabbitMQ, and one beat.

Buyers, each from its own loopback address (127.0.1.N, so the balancer sees real, distinct clients), run whole
checkouts through the balancer: add to a new cart, start, confirm, each with an ``Idempotency-Key`` and retrying
what a storefront retries. ``--kill-at`` seconds into the rush one web server is SIGKILLed with its workers (the
host is gone); ``--rejoin-after`` seconds later it is started again. After the rush, an attacker at one address
guesses passwords behind forged ``X-Forwarded-For`` headers while a bystander at another signs in. Then, with no
human, every saga must end; the verdict (:func:`verdict`, a pure function of the collected facts, tested in
tests/bench/test_multihost_verdict.py) checks oversell, charges, lost orders, failover, workers, beat and
throttles, and the figures (checkouts/s, p50/p99, what clients saw during the kill) are printed.
Non-zero exit status if any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import stack as st
from bench.chaos import SUCCESS_STATES, Told, answer_detail, emulator_intents, findings
from bench.checkout import percentile

RABBITMQ = "127.0.0.1:5672"
# Answers a storefront retries with the same Idempotency-Key: no answer, a 5xx, a 429, a request still running.
RETRIED_CODES = {0, 429, 500, 502, 503, 504}
IN_PROGRESS = {"checkout_in_progress", "idempotency_request_in_progress"}
# A product the buyers stop asking for.
GONE = {"insufficient_stock", "out_of_stock", "sold_out", "product_unavailable", "product_not_found"}
RELEASE_TASK = "inventory.tasks.release_expired_reservations"
DEFAULT_MIN_CONFIRMED = 150


# --- preflight -------------------------------------------------------------------------------------------------


def missing_tools() -> list[str]:
    """What this machine lacks, each with how to get it."""
    missing = []
    if not shutil.which("haproxy"):
        missing.append("haproxy (the load balancer): apt-get install -y haproxy")
    if not shutil.which("rabbitmqctl"):
        missing.append("rabbitmqctl (to create a private virtual host): apt-get install -y rabbitmq-server")
    host, port = RABBITMQ.split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        missing.append(f"a RabbitMQ broker on {RABBITMQ}: apt-get install -y rabbitmq-server (guest/guest)")
    return missing


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60)


def rabbit_queues(vhost: str) -> dict[str, dict[str, int]]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages", "consumers", "--no-table-headers"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    queues = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            queues[parts[0]] = {"messages": int(parts[1]), "consumers": int(parts[2])}
    return queues


# --- the balancer --------------------------------------------------------------------------------------------


def haproxy_config(*, port: int, servers: dict[str, str], stats_socket: Path) -> str:
    """HAProxy in front of ``servers`` (name → host:port): health checks on /readyz every 500 ms (three misses
    take a server out, two answers bring it back), X-Forwarded-For appended, and only connections that never
    reached a server retried elsewhere: a request a dead server may have half-processed is not replayed by the
    balancer (the client's retry with its Idempotency-Key is the safe replay).

    A dead server refuses the check's connection at once, so it is out within about a second; a busy one
    answers /readyz late, so the check waits up to 3 s: with HAProxy's default (the 500 ms interval) the
    servers of a saturated pool are marked DOWN in turn and the balancer answers 503 to the whole rush."""
    lines = [
        "global",
        "    maxconn 4096",
        f"    stats socket {stats_socket} mode 600 level admin",
        "    log stdout format raw local0",
        "defaults",
        "    mode http",
        # One line per request in haproxy.log: client, request, status, termination state, retries (+: redispatched),
        # server, total time.
        "    log global",
        '    log-format "%ci %HM %HU %ST %tsc %rc %b/%s %Ta"',
        "    timeout connect 1s",
        "    timeout client 35s",
        "    timeout server 35s",
        "    timeout http-request 10s",
        "    timeout check 3s",
        "    option forwardfor",
        "    retries 3",
        "    retry-on conn-failure",
        "    option redispatch 1",
        "frontend shop",
        f"    bind 127.0.0.1:{port}",
        "    default_backend web",
        "backend web",
        "    balance roundrobin",
        "    option httpchk",
        "    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host 127.0.0.1",
        "    http-check expect status 200",
        "    default-server inter 500ms fastinter 250ms downinter 500ms fall 3 rise 2",
    ]
    lines += [f"    server {name} {address} check" for name, address in servers.items()]
    return "\n".join(lines) + "\n"


def haproxy_stats(stats_socket: Path) -> dict[str, dict[str, str]]:
    """``show stat`` from the admin socket: one row per proxy/server, keyed ``backend/server``."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(stats_socket))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {f"{r['pxname']}/{r['svname']}": r for r in rows}


def server_row(stats_socket: Path, name: str) -> dict[str, str]:
    return haproxy_stats(stats_socket).get(f"web/{name}", {})


# --- the buyers ------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One HTTP attempt as a client saw it: ``code`` 0 when no answer came (``detail`` is the transport error)."""

    step: str
    sent: float
    ms: float
    code: int
    detail: str

    @property
    def failed(self) -> bool:
        """What a browser would show as an error page: a 5xx, or nothing at all."""
        return self.code == 0 or self.code >= 500


@dataclass
class Rush:
    url: str
    product_ids: list[int]
    clients: int
    seconds: float
    retry_budget: float = 75.0
    answers: list[Answer] = field(default_factory=list)
    told: dict[str, Told] = field(default_factory=dict)  # checkout id → the buyer's last answer for it
    journeys_ms: list[float] = field(default_factory=list)  # add → confirmed, retries included
    confirmed_at: list[float] = field(default_factory=list)
    gone: set[int] = field(default_factory=set)
    adds: Counter[str] = field(default_factory=Counter)  # cart token → adds that answered 201
    started: float = 0.0
    ended: float = 0.0

    async def _post(self, http: httpx.AsyncClient, step: str, path: str, body: dict, headers: dict):  # noqa: ANN202
        """(last answer, its response or None), retrying what a storefront retries until the budget is spent."""
        deadline = time.monotonic() + self.retry_budget
        for attempt in range(1000):
            t0 = time.monotonic()
            response = None
            try:
                response = await http.post(path, json=body, headers=headers)
            except httpx.HTTPError as exc:
                answer = Answer(step, t0, (time.monotonic() - t0) * 1000, 0, type(exc).__name__)
            else:
                detail = answer_detail(response)
                detail = "not a problem (the balancer's own page)" if detail.isdigit() else detail
                answer = Answer(step, t0, (time.monotonic() - t0) * 1000, response.status_code, detail)
            self.answers.append(answer)
            retry = answer.code in RETRIED_CODES or (answer.code == 409 and answer.detail in IN_PROGRESS)
            if not retry or time.monotonic() >= deadline:
                return answer, response
            hinted = response.headers.get("Retry-After", "") if response is not None else ""
            pause = float(hinted) if hinted.isdigit() else min(2.0, 0.1 * 2**attempt)
            await asyncio.sleep(min(pause * random.uniform(0.8, 1.2), max(0.0, deadline - time.monotonic())))
        return answer, response

    async def _checkout(self, http: httpx.AsyncClient) -> bool:
        """One buyer's whole checkout; False when nothing is left to buy."""
        available = [p for p in self.product_ids if p not in self.gone]
        if not available:
            return False
        product_id = random.choice(available)
        t0 = time.monotonic()
        # A new cart per checkout (no cookie from the last one), and per attempt: a retried add never lands
        # twice in one cart.
        http.cookies.clear()
        add, response = await self._post(http, "add", "/api/cart/items", {"productId": product_id, "quantity": 1}, {})
        if add.code != 201:
            if add.detail in GONE:
                self.gone.add(product_id)
            return True
        token = response.headers["X-Cart-Token"]
        self.adds[token] += 1
        headers = {"X-Cart-Token": token, "Idempotency-Key": uuid.uuid4().hex}
        start, response = await self._post(http, "start", "/api/checkout/start", {}, headers)
        if start.code not in (200, 201):
            if start.detail in GONE:
                self.gone.add(product_id)
            return True
        checkout_id = response.json()["checkoutId"]
        self.told[checkout_id] = Told(start.code, "started", time.monotonic(), token)
        body = {"paymentMethodId": "pm_card_visa", "checkoutId": checkout_id}
        headers = {"X-Cart-Token": token, "Idempotency-Key": uuid.uuid4().hex}
        confirm, _ = await self._post(http, "confirm", "/api/checkout/confirm", body, headers)
        told = Told(confirm.code, confirm.detail, time.monotonic(), token)
        self.told[checkout_id] = told
        if told.confirmed:
            self.confirmed_at.append(told.at)
            self.journeys_ms.append((told.at - t0) * 1000)
        return True

    async def _buyer(self, index: int, deadline: float) -> None:
        # Its own source address: the balancer, and so CartFlow, knows each buyer as a distinct client.
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.1.{index + 1}")
        async with httpx.AsyncClient(base_url=self.url, transport=transport, timeout=40.0) as http:
            while time.monotonic() < deadline:
                if not await self._checkout(http):
                    return

    async def _run(self) -> None:
        self.started = time.monotonic()
        deadline = self.started + self.seconds
        await asyncio.gather(*(self._buyer(i, deadline) for i in range(self.clients)))
        self.ended = time.monotonic()

    def run(self) -> None:
        asyncio.run(self._run())


async def _sign_ins(url: str, address: str, attempts: int, forge: bool) -> Counter[int]:
    """Wrong passwords for made-up users from ``address``; with ``forge``, each behind a new X-Forwarded-For."""
    codes: Counter[int] = Counter()
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30.0) as http:

        async def one(i: int) -> None:
            headers = {"X-Forwarded-For": f"198.51.100.{i % 250 + 1}"} if forge else {}
            body = {"username": f"guess-{uuid.uuid4().hex[:8]}", "password": "not-the-password"}
            try:
                codes[(await http.post("/api/auth/token", json=body, headers=headers)).status_code] += 1
            except httpx.HTTPError:
                codes[0] += 1

        for batch in range(0, attempts, 5):
            await asyncio.gather(*(one(i) for i in range(batch, min(batch + 5, attempts))))
    return codes


def throttle_probe(url: str, *, attempts: int, rate: str) -> dict[str, Any]:
    """An attacker at 127.0.0.200 forging X-Forwarded-For, then a bystander at 127.0.0.201: per real client,
    the attacker runs into the sign-in limit and the bystander does not."""
    attacker = asyncio.run(_sign_ins(url, "127.0.0.200", attempts, forge=True))
    bystander = asyncio.run(_sign_ins(url, "127.0.0.201", 1, forge=False))
    return {"attempts": attempts, "rate": rate, "attacker": dict(attacker), "bystander": dict(bystander)}


# --- the verdict: a pure function of the facts ------------------------------------------------------------------


@dataclass
class Check:
    name: str
    status: str  # "pass", "fail", or "pending" (what it checks is not in this branch yet)
    figure: str


def verdict(facts: dict[str, Any], *, min_confirmed: int) -> list[Check]:
    """Every check of the run, each with the figure it judged; a missing fact fails its check."""
    checks: list[Check] = []

    def check(name: str, ok: bool, figure: str) -> None:
        checks.append(Check(name, "pass" if ok else "fail", figure))

    rush = facts.get("rush") or {}
    confirmed = rush.get("confirmed", 0)
    check(
        "the rush sold through the balancer",
        confirmed >= min_confirmed and rush.get("gone_products", 0) > 0,
        f"{confirmed} checkouts confirmed (floor {min_confirmed}), {rush.get('gone_products', 0)} products"
        " answered sold out (demand met the stock)",
    )

    served = facts.get("served_before_kill") or {}
    check(
        "both web servers served the rush",
        len(served) == 2 and all(n > 0 for n in served.values()),
        f"balancer sessions per server before the kill: {served}",
    )

    kill = facts.get("kill") or {}
    check(
        "a web server was SIGKILLed mid-rush",
        kill.get("existed") is True
        and kill.get("exit") == -signal.SIGKILL
        and kill.get("port_closed") is True
        and 0 < kill.get("at", 0) < rush.get("seconds", 0),
        f"{kill.get('victim')} (PID {kill.get('pid')}) exit {kill.get('exit')} (SIGKILL is {-signal.SIGKILL})"
        f" at t={kill.get('at', 0):.1f}s, port closed={kill.get('port_closed')}",
    )

    over = facts.get("failover") or {}
    check(
        "the balancer failed over",
        over.get("down_after_s") is not None
        and over.get("confirmed_while_down", 0) > 0
        and over.get("survivor_sessions_while_down", 0) > 0,
        f"{kill.get('victim')} marked DOWN {over.get('down_after_s')} s after the kill;"
        f" {over.get('confirmed_while_down', 0)} checkouts confirmed and"
        f" {over.get('survivor_sessions_while_down', 0)} sessions served by the survivor while it was down",
    )

    rejoin = facts.get("rejoin") or {}
    check(
        "the restarted web server rejoined",
        rejoin.get("up_after_s") is not None and rejoin.get("sessions_after", 0) > 0,
        f"UP {rejoin.get('up_after_s')} s after its restart, {rejoin.get('sessions_after', 0)} sessions since",
    )

    workers = facts.get("workers") or {}
    per_worker = workers.get("tasks") or {}
    queues = workers.get("queues") or {}
    check(
        "two Celery workers on RabbitMQ shared the tasks",
        str(workers.get("broker", "")).startswith("amqp://")
        and len(per_worker) == 2
        and all(n > 0 for n in per_worker.values())
        and bool(queues)
        and all(q.get("messages", 1) == 0 for q in queues.values()),
        f"broker {workers.get('broker')}; tasks per worker {per_worker}; queues at the end {queues}",
    )

    beat = facts.get("beat") or {}
    runs, seconds, interval = beat.get("release_runs", 0), beat.get("seconds", 0), beat.get("interval", 0)
    most = seconds / interval + 2 if interval else 0
    check(
        "exactly one beat",
        beat.get("processes") == 1 and interval > 0 and 1 <= runs <= most,
        f"{beat.get('processes')} beat process; {RELEASE_TASK} ran {runs}× in {seconds:.0f} s every {interval} s"
        f" (one scheduler: at most {most:.0f})",
    )

    non_terminal = facts.get("non_terminal")
    check(
        "sagas terminal without a human",
        non_terminal == 0,
        f"{non_terminal} non-terminal, healed {facts.get('healed_after_s')} s after the rush; {facts.get('sagas')}",
    )
    check("check_invariants", facts.get("check_invariants") == "clean", str(facts.get("check_invariants")))
    check("reconcile_payments", facts.get("reconcile_payments") == "no drift", str(facts.get("reconcile_payments")))

    oversold = facts.get("oversold")
    sold = facts.get("sold") or {}
    check(
        "zero oversell",
        oversold is not None and not oversold and bool(sold) and sold.get("units", 1) <= sold.get("stock", 0),
        f"{sold.get('units')} units sold of {sold.get('stock')} in stock; oversold products: {oversold}",
    )

    charges = facts.get("charges") or {}
    per_order = charges.get("succeeded_per_confirmed_order") or {}
    bad = [facts.get(k) for k in ("orders_with_several_intents", "double_charges", "money_without_goods")]
    check(
        "exactly one succeeded charge per confirmed order",
        bool(per_order)
        and set(per_order) == {1}
        and charges.get("payment_rows_not_succeeded") == []
        and all(v is not None and not v for v in bad)
        and facts.get("goods_without_money") == [],
        f"confirmed orders by succeeded PaymentIntents in the emulator: {per_order};"
        f" Payment rows not succeeded: {charges.get('payment_rows_not_succeeded')};"
        f" several intents {bad[0]}, double charges {bad[1]}, money without goods {bad[2]},"
        f" goods without money {facts.get('goods_without_money')}",
    )

    writes = facts.get("cart_writes") or {}
    check(
        "no request applied twice",
        writes.get("checkouts", 0) > 0 and writes.get("applied_more_than_sent") == [],
        f"{writes.get('checkouts')} checkouts; carts written more often than their buyer asked:"
        f" {writes.get('applied_more_than_sent')}",
    )

    told, final = facts.get("told") or {}, facts.get("final") or {}
    lost, charged_unfinished, unknown = [], [], []
    for checkout_id, said in told.items():
        end = final.get(checkout_id)
        if end is None:
            unknown.append(checkout_id)
            continue
        if said["confirmed"] and (end["order"] not in SUCCESS_STATES or end["refunded"]):
            lost.append(checkout_id)
        if said["failed_on_server"] and end["charged"] and not end["refunded"] and end["order"] != "fulfilled":
            charged_unfinished.append(checkout_id)
    told_ok = sum(s["confirmed"] for s in told.values())
    check(
        "no confirmed order lost",
        told_ok > 0 and not lost and not charged_unfinished and not unknown,
        f"{told_ok} buyers told confirmed: {len(lost)} of them not confirmed in the end {lost[:5]};"
        f" {len(charged_unfinished)} told an error but charged without goods {charged_unfinished[:5]};"
        f" {len(unknown)} checkouts unknown to the server {unknown[:5]}",
    )

    hooks = facts.get("webhook_events")
    bad_hooks = None if hooks is None else hooks.get("parked", 0) + hooks.get("failed", 0)
    check("no parked or failed webhook event", bad_hooks == 0, f"{bad_hooks} parked/failed; statuses {hooks}")
    sent = facts.get("webhook_deliveries") or {}
    check(
        "every webhook accepted through the balancer",
        sent.get("events", 0) > 0 and sent.get("given_up") == [] and sent.get("left") == 0,
        f"{sent.get('events')} events sent by the emulator, given up on {sent.get('given_up')},"
        f" {sent.get('left')} still queued; attempts by answer {sent.get('attempts')}",
    )

    probe = facts.get("throttle") or {}
    attacker, bystander = probe.get("attacker") or {}, probe.get("bystander") or {}
    rush_limited = rush.get("rate_limited")
    figure = (
        f"attacker at one address behind {probe.get('attempts')} forged X-Forwarded-For values: answers {attacker}"
        f" (limit {probe.get('rate')}); bystander at another address: {bystander};"
        f" rush buyers answered rate_limited: {rush_limited}"
    )
    if not probe.get("trusted_proxies_supported"):
        checks.append(
            Check("throttles per real client", "pending", "CARTFLOW_TRUSTED_PROXIES is not a setting yet; " + figure)
        )
    else:
        check(
            "throttles per real client",
            attacker.get(429, 0) > 0 and bystander.get(429, 0) == 0 and bool(bystander) and rush_limited == 0,
            figure,
        )
    return checks


# --- the figures -------------------------------------------------------------------------------------------------


def rush_figures(rush: Rush, kill_at: float, window: float) -> dict[str, Any]:
    """Checkouts/s, latencies, and what clients saw around the kill (``kill_at`` on the monotonic clock)."""
    span = (max(rush.confirmed_at) - rush.started) if rush.confirmed_at else 0.0
    by_step: dict[str, list[float]] = {}
    for a in rush.answers:
        by_step.setdefault(a.step, []).append(a.ms)
    failed = [a for a in rush.answers if a.failed]
    in_window = [a for a in failed if kill_at <= a.sent + a.ms / 1000 <= kill_at + window]
    before = sum(t < kill_at for t in rush.confirmed_at)
    after = [t for t in rush.confirmed_at if kill_at <= t <= kill_at + window]
    return {
        "seconds": rush.ended - rush.started,
        "confirmed": len(rush.confirmed_at),
        "checkouts_per_s": round(len(rush.confirmed_at) / span, 1) if span else 0.0,
        "checkouts_per_s_before_kill": round(before / (kill_at - rush.started), 1) if kill_at > rush.started else 0.0,
        "checkouts_per_s_after_kill": round(len(after) / window, 1),
        "journey_p50_ms": round(percentile(rush.journeys_ms, 50)),
        "journey_p99_ms": round(percentile(rush.journeys_ms, 99)),
        "steps": {
            step: {"requests": len(v), "p50_ms": round(percentile(v, 50)), "p99_ms": round(percentile(v, 99))}
            for step, v in by_step.items()
        },
        "outcomes": dict(Counter(f"{a.step}:{a.code} {a.detail}" for a in rush.answers if a.code >= 400 or not a.code)),
        "client_errors_total": dict(Counter(f"{a.code or 'no answer'} {a.detail}" for a in failed)),
        "client_errors_in_kill_window": dict(Counter(f"{a.code or 'no answer'} {a.detail}" for a in in_window)),
        "kill_window_s": window,
        "rate_limited": sum(a.code == 429 and a.detail == "rate_limited" for a in rush.answers),
        "gone_products": len(rush.gone),
        "told": dict(Counter(f"{t.code} {t.detail}" for t in rush.told.values())),
    }


def charge_facts(confirmed_orders: list[str], intents: list[dict[str, Any]]) -> dict[str, Any]:
    """Per confirmed order: how many of its PaymentIntents succeeded in Stripe, and whether its Payment row agrees."""
    from payments.models import Payment

    succeeded: Counter[str] = Counter()
    for pi in intents:
        if pi["status"] == "succeeded":
            succeeded[pi["metadata"].get("order_id", "?")] += 1
    rows = dict(Payment.objects.filter(order_id__in=confirmed_orders).values_list("order_id", "status"))
    return {
        "succeeded_per_confirmed_order": dict(Counter(succeeded.get(o, 0) for o in confirmed_orders)),
        "payment_rows_not_succeeded": sorted(o for o in confirmed_orders if rows.get(o) != "succeeded"),
    }


def cart_writes(adds: Counter[str]) -> dict[str, Any]:
    """Each checkout's cart version (one per write) against the adds its buyer sent: more writes than requests
    would mean something between the buyer and Redis applied a request twice."""
    from cart.identity import token_hash
    from orders.models import CheckoutSaga

    sent = {token_hash(token): n for token, n in adds.items()}
    sagas = list(CheckoutSaga.objects.values_list("public_id", "cart_token_hash", "cart_version"))
    return {
        "checkouts": len(sagas),
        "applied_more_than_sent": sorted(c for c, digest, version in sagas if version > sent.get(digest, 0)),
    }


def webhook_deliveries(stripe_url: str) -> dict[str, Any]:
    """The emulator's delivery log: every event it sent through the balancer, and the ones it gave up on."""
    status = httpx.get(f"{stripe_url}/_emulator/webhooks", timeout=10).json()
    accepted: set[str] = set()
    attempts: Counter[str] = Counter()
    for d in status["deliveries"]:
        attempts["2xx" if d["ok"] else str(d["status"] or d["error"]).split(":")[0]] += 1
        if d["ok"]:
            accepted.add(d["event_id"])
    sent = {d["event_id"] for d in status["deliveries"]}
    return {
        "events": len(sent),
        "given_up": sorted(sent - accepted),
        "left": status["queued"] + status["in_flight"],
        "attempts": dict(attempts),
    }


def worker_tasks(names: list[str]) -> dict[str, int]:
    """Tasks each worker ran, as the worker itself reports it (``celery inspect stats``)."""
    from cartflow.celery import app

    stats = app.control.inspect(timeout=5).stats() or {}
    counts = {}
    for name in names:
        row = next((v for k, v in stats.items() if k.startswith(name + "-")), None)
        if row is not None:
            counts[name] = sum(row.get("total", {}).values())
    return counts


def release_runs() -> int:
    from cartflow.celery import app

    stats = app.control.inspect(timeout=5).stats() or {}
    return sum(row.get("total", {}).get(RELEASE_TASK, 0) for row in stats.values())


def port_closed(url: str, within: float = 5.0) -> bool:
    """Nothing accepts connections on ``url`` any more (the workers may outlive their master by a moment)."""
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


# --- the run -----------------------------------------------------------------------------------------------------


def catalog(products: int, stock: int) -> list[int]:
    from inventory.models import Product, Stock

    ids = []
    for i in range(products):
        product = Product.objects.create(sku=f"MULTI-{i:02d}", name=f"Multihost {i}", price=1000 + i, currency="usd")
        Stock.objects.create(product=product, on_hand=stock)
        ids.append(product.id)
    return ids


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench multihost", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="buyers, each at its own loopback address")
    parser.add_argument("--seconds", type=float, default=60.0, help="longest the rush may take")
    parser.add_argument("--products", type=int, default=16)
    parser.add_argument("--stock", type=int, default=30, help="units of each product")
    parser.add_argument("--kill-at", type=float, default=12.0, help="seconds into the rush one web server dies")
    parser.add_argument("--rejoin-after", type=float, default=10.0, help="seconds later it is started again")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers per web server")
    parser.add_argument("--web-threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--settle", type=float, default=180.0, help="how long the system gets to heal alone")
    parser.add_argument("--sign-in-attempts", type=int, default=45)
    parser.add_argument("--min-confirmed", type=int, default=DEFAULT_MIN_CONFIRMED)
    parser.add_argument("--stripe-latency-ms", default=os.environ.get("STRIPE_EMULATOR_LATENCY_MS", "300"))
    parser.add_argument("--stripe-rate-limits", default=os.environ.get("STRIPE_EMULATOR_RATE_LIMITS", "25/100"))
    parser.add_argument("--keep", action="store_true", help="keep the logs, the database and the virtual host")
    args = parser.parse_args(argv)
    if not 0 < args.clients <= 250:
        parser.error("--clients must be 1-250 (one loopback address each)")

    missing = missing_tools()
    if missing:
        print("make multihost needs, on this machine:")
        for line in missing:
            print(f"  - {line}")
        return 2

    server = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    db_name = os.environ.get("MULTIHOST_DB", "cartflow_multihost")
    vhost = f"cartflow-multihost-{os.getpid()}"
    facts: dict[str, Any] = {}
    t0 = time.monotonic()

    def note(what: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {what}", flush=True)

    stack = None
    figures: dict[str, Any] = {}
    try:
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        broker = f"amqp://guest:guest@{RABBITMQ}/{vhost}"
        db_url = st.recreate_database(server, db_name)
        stack = st.new_stack(
            db_url=db_url,
            extra_env={
                "CARTFLOW_TRUSTED_PROXIES": "1",
                # Holds outlive the 60 s lock on the Idempotency-Key of a request that died with its server (a
                # retry may take over only then), and the ones buyers gave up on expire within the settle window.
                "CARTFLOW_RESERVATION_TTL_SECONDS": "120",
                "CARTFLOW_RELEASE_INTERVAL_SECONDS": "10",
                # Every host spends one shared Stripe budget (Redis), as `make run` sets it against this profile.
                "STRIPE_EMULATOR_RATE_LIMITS": str(args.stripe_rate_limits),
            },
        )
        # The shop's own throttles (per real client), not the bench's unlimited ones.
        for key in ("CARTFLOW_CART_WRITE_RATE", "CARTFLOW_CART_CREATE_RATE", "CARTFLOW_CHECKOUT_RATE"):
            stack.env.pop(key, None)
        stack.broker_url = stack.env["CELERY_BROKER_URL"] = broker
        stack.start_redis()
        st.django_setup(stack)
        from django.conf import settings
        from django.db import connections

        product_ids = catalog(args.products, args.stock)
        connections.close_all()

        urls = {"web-a": f"http://127.0.0.1:{st.free_port()}", "web-b": f"http://127.0.0.1:{st.free_port()}"}
        for name, url in urls.items():
            stack.start_web(
                worker_class="gthread", workers=args.web_workers, threads=args.web_threads, name=name, url=url
            )
        lb_port, stats_socket = st.free_port(), stack.logdir / "haproxy.sock"
        config = stack.logdir / "haproxy.cfg"
        servers = {name: url.removeprefix("http://") for name, url in urls.items()}
        config.write_text(haproxy_config(port=lb_port, servers=servers, stats_socket=stats_socket))
        subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], check=True)
        stack.spawn("haproxy", ["haproxy", "-db", "-f", str(config)])
        stack.web_url = f"http://127.0.0.1:{lb_port}"
        st.wait_until(
            lambda: all(server_row(stats_socket, n).get("status") == "UP" for n in urls), 30, "both servers UP"
        )
        emulator_env = {
            "STRIPE_EMULATOR_LATENCY_MS": str(args.stripe_latency_ms),
            "STRIPE_EMULATOR_RATE_LIMITS": str(args.stripe_rate_limits),
        }
        stack.start_emulator(int(stack.stripe_url.rsplit(":", 1)[1]), extra_env=emulator_env)
        workers = ["worker-a", "worker-b"]
        for name in workers:
            stack.start_worker(name=name, concurrency=2)
        stack.start_beat()
        beat_started = time.monotonic()
        note(
            f"up: HAProxy {stack.web_url} → {', '.join(f'{n} {u}' for n, u in urls.items())}"
            f" ({args.web_workers}×{args.web_threads} each, CARTFLOW_TRUSTED_PROXIES=1); workers {workers} and"
            f" one beat on RabbitMQ vhost {vhost}; Redis :{stack.redis_port}; emulator {emulator_env};"
            f" {args.products} products × {args.stock} units"
        )

        rush = Rush(stack.web_url, product_ids, args.clients, args.seconds)
        load = threading.Thread(target=rush.run, daemon=True)
        load.start()
        load_started = time.monotonic()
        time.sleep(max(0.0, load_started + args.kill_at - time.monotonic()))
        before = haproxy_stats(stats_socket)
        facts["served_before_kill"] = {n: int(before[f"web/{n}"]["stot"]) for n in urls}
        victim = stack.procs["web-a"]
        kill = {"victim": "web-a", "pid": victim.popen.pid, "existed": victim.alive()}
        killed_at = time.monotonic()
        os.killpg(victim.popen.pid, signal.SIGKILL)
        victim.popen.wait(10)
        kill.update(exit=victim.popen.returncode, at=killed_at - rush.started, port_closed=port_closed(urls["web-a"]))
        facts["kill"] = kill
        note(f"kill -9 web-a (gunicorn master {kill['pid']} and its workers), {kill['at']:.1f}s into the rush")
        down_after = None
        while time.monotonic() < killed_at + 10 and down_after is None:
            if server_row(stats_socket, "web-a").get("status", "").startswith("DOWN"):
                down_after = round(time.monotonic() - killed_at, 2)
            time.sleep(0.05)
        note(f"HAProxy marked web-a DOWN after {down_after} s")
        survivor_before = int(server_row(stats_socket, "web-b")["stot"])
        time.sleep(max(0.0, killed_at + args.rejoin_after - time.monotonic()))
        survivor_while_down = int(server_row(stats_socket, "web-b")["stot"]) - survivor_before
        restarted_at = time.monotonic()
        facts["failover"] = {
            "down_after_s": down_after,
            "confirmed_while_down": sum(killed_at <= t <= restarted_at for t in rush.confirmed_at),
            "survivor_sessions_while_down": survivor_while_down,
        }
        stack.start_web(
            worker_class="gthread", workers=args.web_workers, threads=args.web_threads, name="web-a", url=urls["web-a"]
        )
        up_after = None
        while time.monotonic() < restarted_at + 30 and up_after is None:
            if server_row(stats_socket, "web-a").get("status") == "UP":
                up_after = round(time.monotonic() - restarted_at, 2)
            time.sleep(0.05)
        rejoined_sessions = int(server_row(stats_socket, "web-a")["stot"])
        note(f"web-a started again; HAProxy marked it UP after {up_after} s")

        load.join(args.seconds + 2 * rush.retry_budget + 30)
        rejoin_sessions_after = int(server_row(stats_socket, "web-a")["stot"]) - rejoined_sessions
        facts["rejoin"] = {"up_after_s": up_after, "sessions_after": rejoin_sessions_after}
        figures = rush_figures(rush, killed_at, window=max(5.0, (down_after or 0) + 5.0))
        facts["rush"] = {
            "seconds": figures["seconds"],
            "confirmed": figures["confirmed"],
            "gone_products": figures["gone_products"],
            "rate_limited": figures["rate_limited"],
        }
        note(f"rush over: {figures['confirmed']} checkouts confirmed in {figures['seconds']:.1f} s")

        rate = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].get("sign_in")
        probe = throttle_probe(stack.web_url, attempts=args.sign_in_attempts, rate=str(rate))
        probe["trusted_proxies_supported"] = hasattr(settings, "CARTFLOW_TRUSTED_PROXIES")
        facts["throttle"] = probe
        note(f"sign-in probe: attacker {probe['attacker']}, bystander {probe['bystander']}")

        from django.db.models import Sum

        from orders.models import CheckoutSaga, Order, OrderLine
        from payments.models import WebhookEvent

        settle_start = time.monotonic()
        healed_after = None
        while time.monotonic() < settle_start + args.settle:
            try:
                sagas_left = CheckoutSaga.objects.exclude(state__in=CheckoutSaga.TERMINAL).count()
                events_left = WebhookEvent.objects.filter(status=WebhookEvent.RECEIVED).count()
                queued = sum(q["messages"] for q in rabbit_queues(vhost).values())
                hooks = httpx.get(f"{stack.stripe_url}/_emulator/webhooks", timeout=10).json()
                queued += hooks["queued"] + hooks["in_flight"]
            except Exception:  # noqa: BLE001 - a moment without the database or the broker: ask again
                connections.close_all()
                sagas_left = events_left = queued = -1
            if sagas_left == 0 and events_left == 0 and queued == 0:
                healed_after = round(time.monotonic() - settle_start, 1)
                break
            time.sleep(3)
        note(f"settled after {healed_after} s" if healed_after is not None else "not settled at the deadline")

        found = findings(stack, args.stock, product_ids)
        facts["webhook_deliveries"] = webhook_deliveries(stack.stripe_url)
        facts["cart_writes"] = cart_writes(rush.adds)
        facts.update(found)
        facts["healed_after_s"] = healed_after
        units = OrderLine.objects.filter(order__status__in=SUCCESS_STATES).aggregate(n=Sum("quantity"))["n"] or 0
        facts["sold"] = {"units": units, "stock": args.products * args.stock}
        confirmed_orders = list(Order.objects.filter(status__in=SUCCESS_STATES).values_list("public_id", flat=True))
        facts["charges"] = charge_facts(confirmed_orders, emulator_intents(stack.stripe_url))
        facts["told"] = {
            c: {"confirmed": s.confirmed, "failed_on_server": s.failed_on_server} for c, s in rush.told.items()
        }
        facts["workers"] = {"broker": broker, "tasks": worker_tasks(workers), "queues": rabbit_queues(vhost)}
        facts["beat"] = {
            "processes": sum(1 for n in stack.procs if n.startswith("beat")),
            "release_runs": release_runs(),
            "seconds": time.monotonic() - beat_started,
            "interval": int(stack.env["CARTFLOW_RELEASE_INTERVAL_SECONDS"]),
        }
        lb = haproxy_stats(stats_socket)
        figures["balancer"] = {
            key: {k: lb[key].get(k) for k in ("status", "stot", "hrsp_5xx", "eresp", "econ", "wretr", "wredis")}
            for key in ("shop/FRONTEND", "web/web-a", "web/web-b")
        }
    finally:
        if stack is not None:
            from django.db import connections

            connections.close_all()
            stack.stop_all()
        if not args.keep:
            try:
                rabbitmqctl("delete_vhost", vhost)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                print(f"could not delete the RabbitMQ virtual host {vhost}: rabbitmqctl delete_vhost {vhost}")
            if stack is not None:
                st.drop_database(server, db_name)
        else:
            print(f"kept: logs in {stack.logdir if stack else '-'}, database {db_name}, RabbitMQ vhost {vhost}")

    print_figures(figures, facts)
    checks = verdict(facts, min_confirmed=args.min_confirmed)
    print("verdict:")
    for c in checks:
        print(f"  {c.status.upper():7} {c.name}: {c.figure}")
    failed = [c.name for c in checks if c.status == "fail"]
    pending = [c.name for c in checks if c.status == "pending"]
    print(
        "RESULT: "
        + ("clean" if not failed else "FAILED: " + "; ".join(failed))
        + (f" (pending: {'; '.join(pending)})" if pending else "")
    )
    return 1 if failed else 0


def print_figures(figures: dict[str, Any], facts: dict[str, Any]) -> None:
    if not figures:
        return
    print("\nfigures:")
    print(
        f"  {figures['confirmed']} checkouts confirmed, {figures['checkouts_per_s']} checkouts/s over the rush"
        f" ({figures['checkouts_per_s_before_kill']}/s before the kill, {figures['checkouts_per_s_after_kill']}/s in"
        f" the {figures['kill_window_s']:.1f} s after it);"
        f" whole checkout (add + start + confirm, retries included) p50 {figures['journey_p50_ms']} ms,"
        f" p99 {figures['journey_p99_ms']} ms"
    )
    for step, row in figures["steps"].items():
        print(f"  {step:8} {row['requests']:6} requests  p50 {row['p50_ms']:6} ms  p99 {row['p99_ms']:6} ms")
    print(f"  client errors during the kill window: {figures['client_errors_in_kill_window'] or 'none'}")
    print(f"  client errors over the whole rush: {figures['client_errors_total'] or 'none'}")
    print(f"  answers other than success: {figures['outcomes']}")
    print(f"  buyers' last answer per checkout: {figures['told']}")
    print(f"  failover: {facts.get('failover')}; rejoin: {facts.get('rejoin')}")
    for key, row in (figures.get("balancer") or {}).items():
        print(f"  HAProxy {key}: {row}")
    print()
