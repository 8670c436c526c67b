"""The cart's Redis layout and its Lua scripts. Every change to a cart is exactly one script call.

Layout: one hash per cart, ``cart:{<id>}`` (the braces are a Redis Cluster hash tag), where ``<id>`` is
``u:<user id>`` for a signed-in user or ``t:<sha256 of the token>`` for a guest. Fields:

- ``<product id>`` (digits only) → quantity of that line
- ``version``  → bumped by every write that changes something (the ETag)
- ``currency`` → the currency of the lines (absent while the cart has no lines)

Every script checks ``If-Match`` (when given) against ``version``, applies its change, bumps
``version`` and pushes the TTL forward, all atomically inside Redis: concurrent writers never lose an
update, and Python never reads a cart to write it back. Reads refresh the TTL too (sliding expiry).

Merge touches two carts in one script, so on Redis Cluster both would need the same slot; CartFlow
runs on a single Redis (or a replicated primary), where that always holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from django.conf import settings
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted

from cart.errors import CartUnavailable
from cartflow.exceptions import redis_connection_lost

META_FIELDS = (b"version", b"currency")

# Shared prologue. KEYS[1] cart. ARGV[1] If-Match version ('' = none). Sets `version`, `ccy`, `lines`.
_PROLOGUE = """
local key = KEYS[1]
local exists = redis.call('EXISTS', key) == 1
local version = tonumber(redis.call('HGET', key, 'version') or '0')
local ccy = redis.call('HGET', key, 'currency')
local lines = 0
if exists then
  lines = redis.call('HLEN', key) - (redis.call('HEXISTS', key, 'version')) - (ccy and 1 or 0)
end
local function conflict() return ARGV[1] ~= '' and tonumber(ARGV[1]) ~= version end
"""

# ARGV: if_match, ttl_ms, product_id, quantity, currency, max_line, max_lines, available, must_exist, mode.
# mode 'add' adds to the line, 'set' replaces it (quantity >= 1 here; removal is _REMOVE).
# Returns {status, n}: ok/version, missing/0, conflict/version, currency/<cart currency>,
# too_many_lines/lines, line_max/current quantity, stock/current quantity; 'ok' also returns the whole
# hash as a third element, so the caller renders the cart it wrote without reading it again.
_UPSERT = (
    _PROLOGUE
    + """
if ARGV[9] == '1' and not exists then return {'missing', 0} end
if conflict() then return {'conflict', version} end
local pid = ARGV[3]
local cur = tonumber(redis.call('HGET', key, pid) or '0')
local target = tonumber(ARGV[4])
if ARGV[10] == 'add' then target = cur + target end
if ccy and lines > 0 and ccy ~= ARGV[5] then return {'currency', ccy} end
if cur == 0 and lines >= tonumber(ARGV[7]) then return {'too_many_lines', lines} end
if target > tonumber(ARGV[6]) then return {'line_max', cur} end
if target > tonumber(ARGV[8]) then return {'stock', cur} end
redis.call('HSET', key, pid, target, 'currency', ARGV[5])
version = redis.call('HINCRBY', key, 'version', 1)
redis.call('PEXPIRE', key, ARGV[2])
return {'ok', version, redis.call('HGETALL', key)}
"""
)

# ARGV: if_match, ttl_ms, product_id. Removing an absent line changes nothing (no version bump).
_REMOVE = (
    _PROLOGUE
    + """
if conflict() then return {'conflict', version} end
if not exists then return {'ok', 0} end
if redis.call('HDEL', key, ARGV[3]) == 1 then
  if lines <= 1 then redis.call('HDEL', key, 'currency') end
  version = redis.call('HINCRBY', key, 'version', 1)
end
redis.call('PEXPIRE', key, ARGV[2])
return {'ok', version}
"""
)

# ARGV: if_match, ttl_ms. Drops every line but keeps (and bumps) `version`, so an old ETag can never
# match a rebuilt cart. Returns {status, version, cleared 0|1}.
_CLEAR = (
    _PROLOGUE
    + """
if conflict() then return {'conflict', version, 0} end
if not exists then return {'ok', 0, 0} end
if lines == 0 and not ccy then
  redis.call('PEXPIRE', key, ARGV[2])
  return {'ok', version, 0}
end
redis.call('DEL', key)
redis.call('HSET', key, 'version', version + 1)
redis.call('PEXPIRE', key, ARGV[2])
return {'ok', version + 1, 1}
"""
)

# KEYS[1] the user's cart, KEYS[2] the guest cart. ARGV: ttl_ms, max_line, max_lines.
# Adds the guest lines (capped per line), deletes the guest cart. A missing guest cart is a no-op,
# which makes merging twice harmless. Returns {status, version, detail...}.
_MERGE = """
local dst, src = KEYS[1], KEYS[2]
local version = tonumber(redis.call('HGET', dst, 'version') or '0')
if redis.call('EXISTS', src) == 0 then return {'ok', version, 0} end
local dccy = redis.call('HGET', dst, 'currency')
local sccy = redis.call('HGET', src, 'currency')
local flat = redis.call('HGETALL', src)
local dlines = redis.call('HLEN', dst) - redis.call('HEXISTS', dst, 'version') - (dccy and 1 or 0)
local incoming, added = {}, 0
for i = 1, #flat, 2 do
  local f = flat[i]
  if f ~= 'version' and f ~= 'currency' then
    incoming[#incoming + 1] = {f, tonumber(flat[i + 1])}
    if redis.call('HEXISTS', dst, f) == 0 then added = added + 1 end
  end
end
if #incoming == 0 then
  redis.call('DEL', src)
  return {'ok', version, 0}
end
if dccy and dlines > 0 and sccy and dccy ~= sccy then return {'currency', dccy, sccy} end
if dlines + added > tonumber(ARGV[3]) then return {'too_many_lines', dlines + added, 0} end
local cap = tonumber(ARGV[2])
for _, line in ipairs(incoming) do
  local cur = tonumber(redis.call('HGET', dst, line[1]) or '0')
  redis.call('HSET', dst, line[1], math.min(cap, cur + line[2]))
end
if sccy then redis.call('HSET', dst, 'currency', sccy) end
version = redis.call('HINCRBY', dst, 'version', 1)
redis.call('PEXPIRE', dst, ARGV[1])
redis.call('DEL', src)
return {'ok', version, #incoming}
"""

# ARGV: ttl_ms. The whole hash, with the TTL pushed forward when the cart exists.
_READ = """
local flat = redis.call('HGETALL', KEYS[1])
if #flat > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return flat
"""

_SOURCES = {"upsert": _UPSERT, "remove": _REMOVE, "clear": _CLEAR, "merge": _MERGE, "read": _READ}
_scripts: dict[str, Any] = {}

# What a dead or unreachable Redis raises, through redis-py or django-redis.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, ConnectionInterrupted)


def redis_key(cart_id: str) -> str:
    return "cart:{" + cart_id + "}"


def ttl_seconds(cart_id: str) -> int:
    """Signed-in carts live longer than guest carts (both sliding)."""
    if cart_id.startswith("u:"):
        return int(settings.CARTFLOW_USER_CART_TTL_SECONDS)
    return int(settings.CARTFLOW_CART_TTL_SECONDS)


@contextmanager
def unavailable_on_redis_error() -> Iterator[None]:
    """Turn a Redis outage into a 503 ``cart_unavailable`` problem (with Retry-After)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise CartUnavailable("The cart store is unreachable; retry in a moment.", retry_after=1) from exc
    except IndexError as exc:  # redis-py's "pop from empty list" on a connection lost mid-restart
        if not redis_connection_lost(exc):
            raise
        raise CartUnavailable("The cart store is unreachable; retry in a moment.", retry_after=1) from exc


def _connection() -> redis.Redis:
    return get_redis_connection("default")


def run(name: str, *, keys: list[str], args: list[Any]) -> list[Any]:
    """Run one registered script (registered once per process; re-loaded by redis-py after NOSCRIPT)."""
    with unavailable_on_redis_error():
        conn = _connection()
        script: Callable[..., Any] | None = _scripts.get(name)
        if script is None:
            script = _scripts[name] = conn.register_script(_SOURCES[name])
        result = script(keys=keys, args=args, client=conn)
    return [item.decode() if isinstance(item, bytes) else item for item in result] if name != "read" else result


def read(cart_id: str) -> dict[bytes, bytes]:
    return as_hash(run("read", keys=[redis_key(cart_id)], args=[ttl_seconds(cart_id) * 1000]))


def as_hash(flat: list[bytes]) -> dict[bytes, bytes]:
    """An HGETALL reply (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
