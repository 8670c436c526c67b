"""Flash-sale admission: a Redis token pool per product that caps in-flight checkouts to the stock count.

Admission control only. The database stays the source of truth: ``reservation_reserve``'s
version-checked UPDATE is what makes overselling impossible. The pool exists so that, when thousands
of buyers arrive for 50 units, the 50 who can buy reach PostgreSQL and everyone else is answered from
Redis without a query.

Layout (every key shares the ``{fs}`` hash tag, so one Lua script may touch all of them on a Cluster):

- ``fs:{fs}:free``      hash product_id → tokens free to take now
- ``fs:{fs}:inflight``  hash product_id → tokens held by checkouts in progress
- ``fs:{fs}:held``      hash holder → JSON ``{product_id: quantity}`` (what each checkout holds)
- ``fs:{fs}:stats``     hash of counters (admitted, sold_out, busy, returned, consumed)

A product is in the pool while its ``free`` field exists. Taking is all-or-nothing across lines; a
shortfall is ``sold_out`` when even the in-flight tokens could not cover it (stock is gone), and
``busy`` when in-flight checkouts hold the rest (one may still fail and return its tokens).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django_redis import get_redis_connection

from cartflow.problems import DomainError

FREE = "fs:{fs}:free"
INFLIGHT = "fs:{fs}:inflight"
HELD = "fs:{fs}:held"
STATS = "fs:{fs}:stats"
QUEUE = "fs:{fs}:queue:"  # + product id: the fair queue (sorted set of tickets by arrival)


class SoldOut(DomainError):
    code = "sold_out"


class FlashSaleBusy(DomainError):
    code = "flash_sale_busy"


@dataclass(frozen=True)
class PoolState:
    product_id: int
    free: int
    inflight: int


# KEYS: free, inflight, held, stats. ARGV: holder, now (epoch seconds), then pairs product_id, quantity.
# Returns {"ok"} | {"held"} (this holder already holds tokens: idempotent) | {"sold_out", pid} | {"busy", pid}
# | {"not_flash", pid} (no pool for the product: caller skips admission for it).
_TAKE = """
local holder = ARGV[1]
if redis.call('HEXISTS', KEYS[3], holder) == 1 then return {'held', '0'} end
local n = (#ARGV - 2) / 2
for i = 0, n - 1 do
  local pid = ARGV[3 + 2 * i]
  local q = tonumber(ARGV[4 + 2 * i])
  local free = redis.call('HGET', KEYS[1], pid)
  if not free then return {'not_flash', pid} end
  free = tonumber(free)
  if free < q then
    local inflight = tonumber(redis.call('HGET', KEYS[2], pid) or '0')
    if free + inflight < q then
      redis.call('HINCRBY', KEYS[4], 'sold_out', 1)
      return {'sold_out', pid}
    end
    redis.call('HINCRBY', KEYS[4], 'busy', 1)
    return {'busy', pid}
  end
end
local held = {}
for i = 0, n - 1 do
  local pid = ARGV[3 + 2 * i]
  local q = tonumber(ARGV[4 + 2 * i])
  redis.call('HINCRBY', KEYS[1], pid, -q)
  redis.call('HINCRBY', KEYS[2], pid, q)
  held[pid] = q
end
redis.call('HSET', KEYS[3], holder, cjson.encode({at = tonumber(ARGV[2]), lines = held}))
redis.call('HINCRBY', KEYS[4], 'admitted', 1)
return {'ok', '0'}
"""

# KEYS: free, inflight, held, stats. ARGV: holder, mode ('return' gives tokens back, 'consume' keeps
# them sold). Idempotent: a holder with nothing held is a no-op. Never pushes a product's free count
# for a product no longer in the pool.
_SETTLE = """
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return 0 end
local held = cjson.decode(raw)['lines']
local units = 0
for pid, q in pairs(held) do
  local inflight = tonumber(redis.call('HGET', KEYS[2], pid) or '0')
  redis.call('HSET', KEYS[2], pid, math.max(0, inflight - q))
  if ARGV[2] == 'return' and redis.call('HEXISTS', KEYS[1], pid) == 1 then
    redis.call('HINCRBY', KEYS[1], pid, q)
  end
  units = units + q
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], ARGV[2] == 'return' and 'returned' or 'consumed', 1)
return units
"""

# KEYS: free, inflight, held. ARGV: product_id, target free tokens (from the database).
# Sets the pool to the database's figure minus what in-flight checkouts hold that the database does
# not yet count; never larger than the database allows.
_REPAIR = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local target = math.max(0, tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], ARGV[1], target)
return target
"""


def _redis():
    return get_redis_connection("default")


def _script(name: str, source: str):
    client = _redis()
    cache = _scripts.setdefault(id(client), {})
    if name not in cache:
        cache[name] = client.register_script(source)
    return cache[name]


_scripts: dict[int, dict] = {}


def flash_pool_open(*, product_id: int, tokens: int) -> None:
    """Put a product into the pool with ``tokens`` free (its available stock now)."""
    client = _redis()
    pipe = client.pipeline(transaction=True)
    pipe.hset(FREE, product_id, max(0, tokens))
    pipe.hsetnx(INFLIGHT, product_id, 0)
    pipe.execute()


def flash_pool_close(*, product_id: int) -> None:
    """Take a product out of the pool: checkouts for it go straight to the database again."""
    client = _redis()
    pipe = client.pipeline(transaction=True)
    pipe.hdel(FREE, product_id)
    pipe.hdel(INFLIGHT, product_id)
    pipe.delete(f"{QUEUE}{product_id}")
    pipe.execute()


def flash_tokens_take(*, holder: str, lines: Iterable[tuple[int, int]]) -> bool:
    """Take one token per unit for every flash-sale line, all or nothing, in one script.

    Returns True when tokens were taken (or the holder already held them), False when no line is a
    flash-sale product. Raises :class:`SoldOut` or :class:`FlashSaleBusy`.
    """
    summed: dict[int, int] = {}
    for product_id, quantity in lines:
        summed[product_id] = summed.get(product_id, 0) + quantity
    flash_ids = set(_pool_members(list(summed)))
    wanted = [(pid, q) for pid, q in sorted(summed.items()) if pid in flash_ids]
    if not wanted:
        return False
    argv: list[str | int | float] = [holder, round(time.time(), 3)]
    for pid, q in wanted:
        argv += [pid, q]
    outcome, pid = _script("take", _TAKE)(keys=[FREE, INFLIGHT, HELD, STATS], args=argv)
    outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
    pid = int(pid)
    if outcome == "sold_out":
        raise SoldOut("This product is sold out.", productId=pid)
    if outcome == "busy":
        raise FlashSaleBusy("Every remaining unit is held by a checkout in progress.", productId=pid, retry_after=2)
    if outcome == "not_flash":  # left the pool between the two calls: nothing taken
        return False
    return True


def flash_tokens_return(*, holder: str) -> int:
    """Give a checkout's tokens back (decline, cancel, expiry, failure). Safe to call twice."""
    return int(_script("settle", _SETTLE)(keys=[FREE, INFLIGHT, HELD, STATS], args=[holder, "return"]))


def flash_tokens_consume(*, holder: str) -> int:
    """The checkout was confirmed: its tokens are sold, not returned. Safe to call twice."""
    return int(_script("settle", _SETTLE)(keys=[FREE, INFLIGHT, HELD, STATS], args=[holder, "consume"]))


def flash_pool_repair(*, product_id: int, db_available: int, unreserved_inflight: int = 0) -> int:
    """Set a product's free tokens from the database (source of truth).

    ``db_available`` is on_hand − reserved; ``unreserved_inflight`` counts tokens held by checkouts
    that have not reserved in the database yet. Returns the new free count, or -1 when the product
    is not in the pool.
    """
    target = db_available - unreserved_inflight
    return int(_script("repair", _REPAIR)(keys=[FREE, INFLIGHT, HELD], args=[product_id, target]))


def flash_pool_state(*, product_id: int) -> PoolState | None:
    client = _redis()
    free, inflight = client.hget(FREE, product_id), client.hget(INFLIGHT, product_id)
    if free is None:
        return None
    return PoolState(product_id=product_id, free=int(free), inflight=int(inflight or 0))


def flash_pool_products() -> list[int]:
    return sorted(int(pid) for pid in _redis().hkeys(FREE))


@dataclass(frozen=True)
class FlashHold:
    holder: str
    at: float
    lines: dict[int, int]


def flash_holders() -> list[FlashHold]:
    """Every in-flight holder, when it took its tokens and what it holds (for the sweeper and metrics)."""
    out = []
    for h, v in _redis().hgetall(HELD).items():
        data = json.loads(v)
        holder = h.decode() if isinstance(h, bytes) else h
        out.append(FlashHold(holder, float(data["at"]), {int(k): int(q) for k, q in data["lines"].items()}))
    return out


def flash_stats() -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in _redis().hgetall(STATS).items()}


def _pool_members(product_ids: list[int]) -> list[int]:
    if not product_ids:
        return []
    values = _redis().hmget(FREE, product_ids)
    return [pid for pid, v in zip(product_ids, values, strict=True) if v is not None]
