"""Flash-sale admission: a Redis token pool per product that caps in-flight checkouts to the stock count.

Admission control only. The database stays the source of truth: ``reservation_reserve``'s
version-checked UPDATE is what makes overselling impossible. The pool exists so that, when thousands
of buyers arrive for 50 units, the 50 who can buy reach PostgreSQL and everyone else is answered from
Redis without a query.

The Redis keys are laid out in inventory/flashsale_keys.py.

A product is in the pool while its ``free`` field exists. Taking is all-or-nothing across lines; a
shortfall is ``sold_out`` when even the in-flight tokens could not cover it (stock is gone), and
``busy`` when in-flight checkouts hold the rest (one may still fail and return its tokens). Queued
tickets stand in front of buyers without one: a buyer without a ticket only gets a token when more are
free than tickets wait.

Lifecycle of a holder's tokens (holder = checkout id): :func:`flash_tokens_take` before any database
work; :func:`flash_tokens_return` on cancel, expiry and failure (not on a decline: the checkout stays
open); :func:`flash_tokens_consume` on confirmation. :func:`flash_pool_sweep` (beat) repairs whatever a
crash or a Redis restart left behind, from the database.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from inventory import flashsale_metrics as metrics
from inventory.errors import FlashSaleBusy, FlashTicketNotFound, ProductNotFound, QuantityLimitExceeded, SoldOut
from inventory.flashsale_keys import (
    FREE,
    HELD,
    INFLIGHT,
    QUEUE,
    REOPEN_LOCK,
    STATS,
    TICKET,
    lua_script,
    redis_client,
    text,
)
from inventory.models import Product, Reservation, Stock
from inventory.selectors import product_cache_invalidate, product_infos_get, stock_available

log = logging.getLogger(__name__)

BUSY_RETRY_AFTER = 2
# A holder that took tokens but has no reservation after this long crashed between take and reserve.
STALE_HOLDER_SECONDS = 60


@dataclass(frozen=True)
class PoolState:
    product_id: int
    free: int
    inflight: int
    queued: int = 0


# KEYS: free, inflight, held, stats. ARGV: holder, now (epoch seconds), ticket ('' for none), cart key
# ('' for none), most units of one product per buyer (0 = no limit), then pairs product_id, quantity.
# Products without a pool are skipped and listed in the reply. Returns {'ok', missing...} | {'held'} (this
# holder already holds tokens: idempotent) | {'active', holder} (another checkout of this cart holds tokens:
# nothing taken) | {'foreign_ticket'} (the ticket was joined by another cart) | {'limit', pid} | {'sold_out',
# pid} | {'busy', pid}. 'ok' with nothing taken (no flash product in the lines) records no holder.
_TAKE = """
local holder = ARGV[1]
if redis.call('HEXISTS', KEYS[3], holder) == 1 then return {'held'} end
local ticket, cart, most = ARGV[3], ARGV[4], tonumber(ARGV[5])
if cart ~= '' then
  local other = redis.call('GET', 'fs:{fs}:cart:' .. cart)
  if other and redis.call('HEXISTS', KEYS[3], other) == 1 then return {'active', other} end
end
if ticket ~= '' then
  local owner = redis.call('HGET', 'fs:{fs}:ticket:' .. ticket, 'cart')
  if owner and owner ~= cart then return {'foreign_ticket'} end
end
local n = (#ARGV - 5) / 2
local take, missing = {}, {}
for i = 0, n - 1 do
  local pid = ARGV[6 + 2 * i]
  local q = tonumber(ARGV[7 + 2 * i])
  local free = redis.call('HGET', KEYS[1], pid)
  if free and most > 0 and q > most then return {'limit', pid} end
  if free then
    free = tonumber(free)
    local qkey = 'fs:{fs}:queue:' .. pid
    local ahead = redis.call('ZCARD', qkey)
    if ticket ~= '' then
      local rank = redis.call('ZRANK', qkey, ticket)
      if rank then ahead = rank end
    end
    if free - ahead < q then
      local inflight = tonumber(redis.call('HGET', KEYS[2], pid) or '0')
      if free + inflight < q then
        redis.call('HINCRBY', KEYS[4], 'sold_out', 1)
        return {'sold_out', pid}
      end
      redis.call('HINCRBY', KEYS[4], 'busy', 1)
      return {'busy', pid}
    end
    take[#take + 1] = {pid, q}
  else
    missing[#missing + 1] = pid
  end
end
local reply = {'ok'}
for _, pid in ipairs(missing) do reply[#reply + 1] = pid end
if #take == 0 then return reply end
local held = {}
for _, line in ipairs(take) do
  redis.call('HINCRBY', KEYS[1], line[1], -line[2])
  redis.call('HINCRBY', KEYS[2], line[1], line[2])
  held[line[1]] = line[2]
  if ticket ~= '' then
    redis.call('ZREM', 'fs:{fs}:queue:' .. line[1], ticket)
  end
end
if ticket ~= '' then redis.call('DEL', 'fs:{fs}:ticket:' .. ticket) end
redis.call('HSET', KEYS[3], holder, cjson.encode({at = tonumber(ARGV[2]), lines = held, cart = cart}))
if cart ~= '' then redis.call('SET', 'fs:{fs}:cart:' .. cart, holder, 'EX', 86400) end
redis.call('HINCRBY', KEYS[4], 'admitted', 1)
return reply
"""

# KEYS: free, inflight, held, stats. ARGV: holder, mode ('return' gives tokens back, 'consume' keeps
# them sold). Idempotent: a holder with nothing held is a no-op. Never touches a product no longer in the
# pool (stopped while the checkout ran).
_SETTLE = """
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return 0 end
local data = cjson.decode(raw)
local held = data['lines']
local units = 0
for pid, q in pairs(held) do
  if redis.call('HEXISTS', KEYS[1], pid) == 1 then
    local inflight = tonumber(redis.call('HGET', KEYS[2], pid) or '0')
    redis.call('HSET', KEYS[2], pid, math.max(0, inflight - q))
    if ARGV[2] == 'return' then redis.call('HINCRBY', KEYS[1], pid, q) end
  end
  units = units + q
end
redis.call('HDEL', KEYS[3], ARGV[1])
if data['cart'] and data['cart'] ~= '' then
  local ckey = 'fs:{fs}:cart:' .. data['cart']
  if redis.call('GET', ckey) == ARGV[1] then redis.call('DEL', ckey) end
end
redis.call('HINCRBY', KEYS[4], ARGV[2] == 'return' and 'returned' or 'consumed', 1)
return units
"""

# KEYS: free, inflight, held. ARGV: product_id, available in the database (on_hand - reserved, read AFTER
# the holders' reservations were read), then the holders the database already counts (they have a HELD
# reservation). Atomically: free = available - tokens of every other current holder (not yet reserved),
# inflight = tokens of every current holder. Never larger than the database allows.
_REPAIR = """
local pid = ARGV[1]
if redis.call('HEXISTS', KEYS[1], pid) == 0 then return -1 end
local counted = {}
for i = 3, #ARGV do counted[ARGV[i]] = true end
local unreserved, inflight = 0, 0
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  local q = cjson.decode(all[i + 1])['lines'][pid]
  if q then
    inflight = inflight + q
    if not counted[all[i]] then unreserved = unreserved + q end
  end
end
local target = math.max(0, tonumber(ARGV[2]) - unreserved)
redis.call('HSET', KEYS[1], pid, target)
redis.call('HSET', KEYS[2], pid, inflight)
return target
"""


# --- the pool --------------------------------------------------------------------------------------


def flash_pool_open(*, product_id: int, tokens: int, only_if_missing: bool = False) -> bool:
    """Put a product into the pool with ``tokens`` free. ``only_if_missing``: leave an existing pool alone.

    Returns True when this call set the free count.
    """
    client = redis_client()
    if only_if_missing:
        opened = bool(client.hsetnx(FREE, product_id, max(0, tokens)))
    else:
        client.hset(FREE, product_id, max(0, tokens))
        opened = True
    client.hsetnx(INFLIGHT, product_id, 0)
    return opened


def flash_pool_close(*, product_id: int) -> None:
    """Take a product out of the pool: checkouts for it go straight to the database again."""
    client = redis_client()
    tickets = client.zrange(f"{QUEUE}{product_id}", 0, -1)
    pipe = client.pipeline(transaction=True)
    pipe.hdel(FREE, product_id)
    pipe.hdel(INFLIGHT, product_id)
    pipe.delete(f"{QUEUE}{product_id}")
    for ticket in tickets:
        pipe.delete(f"{TICKET}{text(ticket)}")
    pipe.execute()


def flash_pool_repair(*, product_id: int, db_available: int, counted_holders: Iterable[str] = ()) -> int:
    """Set a product's free tokens from the database (source of truth), in one script.

    ``db_available`` is on_hand − reserved, read after the reservations of the current holders were read;
    ``counted_holders`` are the holders whose units the database already counts as reserved. Tokens of
    every other current holder are subtracted. Returns the new free count, or -1 when the product is not
    in the pool.
    """
    args: list[str | int] = [product_id, db_available, *counted_holders]
    return int(lua_script("repair", _REPAIR)(keys=[FREE, INFLIGHT, HELD], args=args))


def flash_pool_state(*, product_id: int) -> PoolState | None:
    client = redis_client()
    pipe = client.pipeline(transaction=False)
    pipe.hget(FREE, product_id)
    pipe.hget(INFLIGHT, product_id)
    pipe.zcard(f"{QUEUE}{product_id}")
    free, inflight, queued = pipe.execute()
    if free is None:
        return None
    return PoolState(product_id=product_id, free=int(free), inflight=int(inflight or 0), queued=int(queued))


def flash_pool_products() -> list[int]:
    return sorted(int(pid) for pid in redis_client().hkeys(FREE))


# --- tokens ----------------------------------------------------------------------------------------


def flash_tokens_take(
    *,
    holder: str,
    lines: Iterable[tuple[int, int]],
    ticket: str | None = None,
    cart_key: str | None = None,
    max_units: int = 0,
) -> bool:
    """Take one token per unit for every flash-sale line, all or nothing, in one Redis round trip.

    Call it before any database work, with the checkout id the saga will use as ``holder``. Returns
    True when tokens were taken (or the holder already held them), False when no line is a flash-sale
    product. Raises :class:`SoldOut`, :class:`FlashSaleBusy`, or :class:`QuantityLimitExceeded` for a line
    over ``max_units`` (0 = no limit). ``ticket``: a fair-queue ticket (inventory/flashsale_queue.py) goes
    ahead of buyers without one; one joined by another cart raises :class:`FlashTicketNotFound`.
    ``cart_key``: while another checkout of the same cart holds tokens, nothing is taken and False is
    returned (the caller finds that active checkout), so a second start never competes with the first.

    A sold-out or busy answer never touches the database. Only when a line names a product with no
    pool (none is a flash sale, or Redis lost the pool) is the catalog asked — through its Redis cache —
    whether it is a flash-sale product; a lost pool is then re-opened from the database.
    """
    summed: dict[int, int] = {}
    for product_id, quantity in lines:
        summed[product_id] = summed.get(product_id, 0) + quantity
    if not summed:
        return False
    started = time.perf_counter()
    try:
        args = {"holder": holder, "summed": summed, "ticket": ticket or "", "cart": cart_key or "", "most": max_units}
        taken, missing = _take(**args)
        if missing and flash_pools_reopen_lost(product_ids=missing):
            if taken:  # give back and take again: all lines in one script, all or nothing
                flash_tokens_return(holder=holder)
            taken, missing = _take(**args)
    except SoldOut:
        metrics.rejected("sold_out", time.perf_counter() - started)
        raise
    except FlashSaleBusy:
        metrics.rejected("busy", time.perf_counter() - started)
        raise
    if taken:
        metrics.admitted(time.perf_counter() - started)
    return taken


def _take(*, holder: str, summed: dict[int, int], ticket: str, cart: str, most: int) -> tuple[bool, list[int]]:
    argv: list[str | int | float] = [holder, round(time.time(), 3), ticket, cart, max(0, most)]
    for pid, q in sorted(summed.items()):
        argv += [pid, q]
    reply = [text(v) for v in lua_script("take", _TAKE)(keys=[FREE, INFLIGHT, HELD, STATS], args=argv)]
    outcome = reply[0]
    if outcome == "held":
        return True, []
    if outcome == "active":
        return False, []
    if outcome == "foreign_ticket":
        raise FlashTicketNotFound("This queue ticket was not joined by this cart.")
    if outcome == "limit":
        raise QuantityLimitExceeded(f"At most {most} units per buyer.", productId=int(reply[1]), limit=most)
    if outcome == "sold_out":
        raise SoldOut("This product is sold out.", productId=int(reply[1]))
    if outcome == "busy":
        raise FlashSaleBusy(
            "Every remaining unit is held by a checkout in progress.",
            productId=int(reply[1]),
            retry_after=BUSY_RETRY_AFTER,
        )
    missing = [int(pid) for pid in reply[1:]]
    return len(missing) < len(summed), missing


def flash_pools_reopen_lost(*, product_ids: list[int]) -> bool:
    """Re-open the pools of flash-sale products whose pool is missing (Redis restarted). True if any is.

    One process re-opens each (a short Redis lock); the others wait up to half a second for it, then
    answer busy.
    """
    flash = [pid for pid, info in product_infos_get(product_ids=product_ids).items() if info.flash_sale]
    if not flash:
        return False
    client = redis_client()
    for pid in sorted(flash):
        if client.hexists(FREE, pid):
            continue
        if not client.set(f"{REOPEN_LOCK}{pid}", "1", nx=True, ex=5):
            if not _wait_for_pool(client, pid, seconds=0.5):
                raise FlashSaleBusy("The flash sale is restarting.", productId=pid, retry_after=1)
            continue
        _open_from_db(pid)
        log.warning("flash-sale pool re-opened after it was lost", extra={"product_id": pid})
    return True


def _wait_for_pool(client, product_id: int, *, seconds: float) -> bool:  # noqa: ANN001
    """Another process is re-opening the pool: a short wait beats sending the buyer away."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.hexists(FREE, product_id):
            return True
        time.sleep(0.01)
    return False


def flash_tokens_return(*, holder: str) -> int:
    """Give a checkout's tokens back (cancel, expiry, failure). Safe to call twice; returns units."""
    units = int(lua_script("settle", _SETTLE)(keys=[FREE, INFLIGHT, HELD, STATS], args=[holder, "return"]))
    if units:
        metrics.settled("returned")
    return units


def flash_tokens_consume(*, holder: str) -> int:
    """The checkout was confirmed: its tokens are sold, not returned. Safe to call twice; returns units."""
    units = int(lua_script("settle", _SETTLE)(keys=[FREE, INFLIGHT, HELD, STATS], args=[holder, "consume"]))
    if units:
        metrics.settled("consumed")
    return units


@dataclass(frozen=True)
class FlashHold:
    holder: str
    at: float
    lines: dict[int, int]


def flash_holders() -> list[FlashHold]:
    """Every in-flight holder, when it took its tokens and what it holds (for the sweeper and metrics)."""
    out = []
    for h, v in redis_client().hgetall(HELD).items():
        data = json.loads(v)
        out.append(FlashHold(text(h), float(data["at"]), {int(k): int(q) for k, q in data["lines"].items()}))
    return out


def flash_stats() -> dict[str, int]:
    return {text(k): int(v) for k, v in redis_client().hgetall(STATS).items()}


# --- start, stop, sweep ----------------------------------------------------------------------------


def flash_sale_start(*, product_id: int) -> PoolState:
    """Put a product into flash-sale mode: the flag in the database, and a pool of its available stock.

    Safe to run twice (the pool is re-synced from the database, in-flight holders kept).
    """
    if not Product.objects.filter(id=product_id).update(flash_sale=True):
        raise ProductNotFound(f"No product has id {product_id}.", productId=product_id)
    product_cache_invalidate(product_id=product_id)
    _open_from_db(product_id)
    flash_pool_sync(product_id=product_id)
    state = flash_pool_state(product_id=product_id)
    assert state is not None
    return state


def flash_sale_stop(*, product_id: int) -> None:
    """Leave flash-sale mode: the flag off and the pool closed (checkouts go straight to the database).

    Checkouts holding tokens finish normally; settling them later is a no-op for this product.
    """
    if not Product.objects.filter(id=product_id).update(flash_sale=False):
        raise ProductNotFound(f"No product has id {product_id}.", productId=product_id)
    product_cache_invalidate(product_id=product_id)
    flash_pool_close(product_id=product_id)


def _open_from_db(product_id: int) -> bool:
    """Open a missing pool with the database's available stock (no holder can hold tokens of a product
    without a pool). Never at zero first: a buyer in between would be told ``sold_out``."""
    return flash_pool_open(product_id=product_id, tokens=stock_available(product_id=product_id), only_if_missing=True)


def flash_pool_sync(*, product_id: int) -> int:
    """Repair one product's pool from the database now (the sweeper's per-product step)."""
    report = flash_pool_sweep(product_ids=[product_id], reopen=False)
    return report.repaired.get(product_id, -1)


@dataclass
class SweepReport:
    reopened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    consumed: list[str] = field(default_factory=list)
    repaired: dict[int, int] = field(default_factory=dict)


def flash_pool_sweep(
    *, product_ids: list[int] | None = None, stale_seconds: float = STALE_HOLDER_SECONDS, reopen: bool = True
) -> SweepReport:
    """Repair the pool from the database (beat runs this; safe to run anywhere, any number of times).

    1. Re-open the pools of flash-sale products that have none (Redis restarted); close pools of
       products no longer in flash-sale mode.
    2. Settle holders the database has settled: committed reservations → consume; released or expired
       → return; no reservation for ``stale_seconds`` (crashed between take and reserve) → return.
    3. Set each pool's free tokens to on_hand − reserved − tokens of holders not yet reserved.
    """
    report = SweepReport()
    flash_ids = set(Product.objects.filter(flash_sale=True).values_list("id", flat=True))
    pooled = set(flash_pool_products())
    if product_ids is not None:
        flash_ids &= set(product_ids)
        pooled &= set(product_ids)
    if reopen:
        for pid in sorted(flash_ids - pooled):
            if _open_from_db(pid):
                report.reopened.append(pid)
        for pid in sorted(pooled - flash_ids):
            flash_pool_close(product_id=pid)
            report.closed.append(pid)
    scope = flash_ids if product_ids is not None else flash_ids | pooled
    targets = [pid for pid in sorted(scope) if pid in flash_ids]

    # Reservations first, stock second: a holder that reserves in between is counted twice (pool too
    # small for one sweep), never zero times (pool too large).
    holders = [h for h in flash_holders() if product_ids is None or set(h.lines) & set(product_ids)]
    statuses: dict[str, set[str]] = {}
    if holders:
        for holder, status in Reservation.objects.filter(holder__in=[h.holder for h in holders]).values_list(
            "holder", "status"
        ):
            statuses.setdefault(holder, set()).add(status)
    now = time.time()
    counted: list[str] = []
    for hold in holders:
        seen = statuses.get(hold.holder, set())
        if "HELD" in seen:
            counted.append(hold.holder)
        elif "COMMITTED" in seen:
            if flash_tokens_consume(holder=hold.holder):
                report.consumed.append(hold.holder)
        elif seen or now - hold.at > stale_seconds:  # released/expired, or crashed before reserving
            if flash_tokens_return(holder=hold.holder):
                report.returned.append(hold.holder)
    stock = dict(
        (pid, on_hand - reserved)
        for pid, on_hand, reserved in Stock.objects.filter(product_id__in=targets).values_list(
            "product_id", "on_hand", "reserved"
        )
    )
    for pid in targets:
        report.repaired[pid] = flash_pool_repair(
            product_id=pid, db_available=max(0, stock.get(pid, 0)), counted_holders=counted
        )
    if report.reopened or report.returned or report.consumed or report.closed:
        log.info(
            "flash-sale pool swept",
            extra={
                "reopened": report.reopened,
                "closed": report.closed,
                "returned": len(report.returned),
                "consumed": len(report.consumed),
            },
        )
    return report
