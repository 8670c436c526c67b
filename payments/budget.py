"""The shared Stripe budget: one token bucket in Redis that every process spends before each request to Stripe.

Stripe limits requests per second per account (test mode 25/s, live mode 100/s) and answers 429 beyond it.
Every web worker, Celery worker and management command talks to the same account, so the limit is kept in
one place: a Redis hash that one Lua script refills at ``CARTFLOW_STRIPE_RATE`` tokens per second and takes
from atomically, on Redis's own clock (``TIME``), so processes with skewed clocks still share one bucket.
payments/gateway.py calls :func:`spend` before every HTTP request it sends (stripe-python's retries too).

The bucket holds at most :func:`burst` tokens (a quarter of a second's rate, at least 2): after an idle spell
no one-second window sees more than ``rate + burst`` requests, which at the default rate of 20/s stays within
the sandbox's 25/s.

Priority. A buyer's call (the default) takes a token whenever there is one and waits at most
``CARTFLOW_STRIPE_WAIT_SECONDS`` for it. Background work (webhook processing, reconciliation, saga recovery)
runs inside :func:`background`: it takes a token only while the bucket holds more than its reserve
(``BACKGROUND_RESERVE`` of the burst, kept for buyers) and waits up to ``BACKGROUND_WAIT_SECONDS`` (it runs
in Celery, where nobody watches a spinner). While buyers use the whole rate, background calls wait; while
buyers are idle, background calls get the whole rate.

A call that gets no token within its wait raises :class:`payments.errors.PaymentProviderBusy` before
anything is sent: nothing happened at Stripe, and the caller keeps its state.

Redis down: the budget fails open. A call whose bucket cannot be read goes to Stripe unmetered (Stripe's own
429s are still retried by the gateway), because a missing budget must not take checkout down. The first
failure logs ``stripe_budget_fail_open`` once and the budget skips Redis for ``FAIL_OPEN_SECONDS`` (so a hung
Redis does not cost a timeout per call); each call let through counts in
``cartflow_stripe_budget_fail_open_total``; ``stripe_budget_restored`` is logged when Redis answers again.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
import random
import threading
import time
from collections.abc import Iterator

import structlog
from django.conf import settings
from django_redis import get_redis_connection
from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

from payments.errors import PaymentProviderBusy

log = structlog.get_logger("cartflow.payments.budget")

KEY_PREFIX = "stripe:budget"
# Share of the burst that background calls leave in the bucket for buyers.
BACKGROUND_RESERVE = 0.5
# How long a background call (Celery) waits for a token before PaymentProviderBusy (its task retries later).
BACKGROUND_WAIT_SECONDS = 30.0
# After Redis failed, calls skip the budget (fail open) this long before asking Redis again.
FAIL_OPEN_SECONDS = 5.0

GRANTED = Counter("cartflow_stripe_budget_tokens_total", "Stripe budget tokens taken, by priority.", ["priority"])
BUSY = Counter(
    "cartflow_stripe_budget_busy_total", "Stripe calls refused (payment_provider_busy), by priority.", ["priority"]
)
FAIL_OPEN = Counter("cartflow_stripe_budget_fail_open_total", "Stripe calls let through unmetered: Redis was down.")
WAITS = Counter(
    "cartflow_stripe_budget_waits_total",
    "Stripe calls that found the budget empty and waited (then got a token or were refused), by priority.",
    ["priority"],
)
WAITED = Histogram(
    "cartflow_stripe_budget_wait_seconds",
    "Time a Stripe call waited for its budget token, by priority.",
    ["priority"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)

# KEYS[1] the bucket (hash: tokens, ts). ARGV: rate (tokens/s), capacity, need (tokens that must be there
# to take one: 1 for buyers, more for background calls). Returns {1, 0} when a token was taken, else
# {0, microseconds until `need` tokens are there}. Only a grant writes; a denial changes nothing.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local rate, capacity, need = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil then
  tokens, ts = capacity, now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
if tokens >= need then
  redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'ts', ts)
  redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
  return {1, 0}
end
return {0, math.ceil((need - tokens) / rate * 1000000)}
"""

_priority: contextvars.ContextVar[str] = contextvars.ContextVar("stripe_budget_priority", default="buyer")
_scripts: list = []  # registered once per process; redis-py re-loads it after a NOSCRIPT
_outage = {"until": 0.0, "logged": False}
_outage_lock = threading.Lock()


@contextlib.contextmanager
def background() -> Iterator[None]:
    """Stripe calls inside this block (or a function it decorates) yield to buyers' calls and wait longer."""
    token = _priority.set("background")
    try:
        yield
    finally:
        _priority.reset(token)


def priority() -> str:
    """``buyer`` (the default) or ``background`` (inside :func:`background`)."""
    return _priority.get()


def burst(rate: float) -> float:
    """The bucket's capacity: a quarter of a second's requests, at least 2 (so background calls can get one)."""
    return max(2.0, math.ceil(rate / 4))


def bucket_key() -> str:
    """One bucket per Stripe key: test mode and live mode (and two accounts) have limits of their own."""
    api_key = settings.STRIPE_SECRET_KEY or "emulator"
    return f"{KEY_PREFIX}:{hashlib.sha256(api_key.encode()).hexdigest()[:12]}"


def spend() -> None:
    """Take one token for one request to Stripe, waiting for it; PaymentProviderBusy past the wait.

    Nothing to do when ``CARTFLOW_STRIPE_RATE`` is 0 (unlimited) or Redis is down (fail open).
    """
    rate = float(settings.CARTFLOW_STRIPE_RATE)
    if rate <= 0:
        return
    level = _priority.get()
    capacity = burst(rate)
    if level == "background":
        need, wait = min(capacity, 1 + BACKGROUND_RESERVE * capacity), BACKGROUND_WAIT_SECONDS
    else:
        need, wait = 1.0, float(settings.CARTFLOW_STRIPE_WAIT_SECONDS)
    started = time.monotonic()
    deadline = started + wait
    waited = False
    while True:
        answer = _take(rate, capacity, need)
        if answer is None:
            return
        granted, micros = answer
        if granted:
            GRANTED.labels(priority=level).inc()
            WAITED.labels(priority=level).observe(time.monotonic() - started)
            return
        # Wake a little after the token is due, spread out, so waiters do not all ask at the same instant.
        pause = micros / 1_000_000 * random.uniform(1.0, 1.2) + 0.001
        if time.monotonic() + pause > deadline:
            BUSY.labels(priority=level).inc()
            raise PaymentProviderBusy(
                f"The shared Stripe budget ({rate:g} requests/s) had no room within {wait:g} s.",
                retry_after=max(1, math.ceil(micros / 1_000_000)),
            )
        if not waited:
            WAITS.labels(priority=level).inc()
            waited = True
        time.sleep(pause)


def _take(rate: float, capacity: float, need: float) -> tuple[int, int] | None:
    """One script call: ``(granted, micros until due)``, or None when Redis cannot be asked (fail open)."""
    if time.monotonic() < _outage["until"]:
        FAIL_OPEN.inc()
        return None
    try:
        client = get_redis_connection("default")
        if not _scripts:
            _scripts.append(client.register_script(_TAKE))
        granted, micros = _scripts[0](keys=[bucket_key()], args=[rate, capacity, need], client=client)
    except (RedisError, OSError) as exc:
        with _outage_lock:
            _outage["until"] = time.monotonic() + FAIL_OPEN_SECONDS
            first = not _outage["logged"]
            _outage["logged"] = True
        if first:
            log.warning("stripe_budget_fail_open", error=f"{exc.__class__.__name__}: {exc}")
        FAIL_OPEN.inc()
        return None
    if _outage["logged"]:
        with _outage_lock:
            was_down, _outage["logged"] = _outage["logged"], False
        if was_down:
            log.info("stripe_budget_restored")
    return int(granted), int(micros)
