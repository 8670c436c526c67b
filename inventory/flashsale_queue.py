"""The flash sale's fair queue: a buyer told ``flash_sale_busy`` may hold a place and is admitted
first-come first-served when a token returns.

Admission itself is the take script's job (inventory/flashsale.py): a ticket at rank ``r`` in
``fs:{fs}:queue:<pid>`` gets a token when ``free - r >= quantity``, and a buyer without a ticket only
when more tokens are free than tickets wait, so nobody without a ticket jumps the queue. This module
adds what the queue needs around that:

- :func:`flash_queue_join` gives a ticket a place at the tail (arrival order from one Redis counter,
  so equal clocks never reorder two buyers);
- :func:`flash_queue_status` tells the ticket's position, whether it is admitted, and until when;
- both first *refresh* the head of the queue in one Lua script: the first ``free`` tickets are marked
  admitted (with the time), an admitted ticket that did not start a checkout within
  ``CARTFLOW_FLASH_QUEUE_ADMIT_SECONDS`` loses its place, and so does a waiting ticket that reaches
  the head without having been polled for ``CARTFLOW_FLASH_QUEUE_POLL_SECONDS`` (an abandoned tab).
  :func:`flash_queue_refresh_all` does the same for every pool (the flash sweeper's beat calls it), so
  lapsed tickets cannot keep buyers without one waiting when nobody polls.

A ticket belongs to the cart that joined (its key is in the ticket's hash): another cart polling it is told
it does not exist, and the take script refuses it to another cart's checkout. It is consumed by the take
script when its checkout starts (``Flash-Ticket`` header on ``POST /api/checkout/start``). Times are Redis
server time (one clock for every app server).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache

from inventory.errors import FlashSaleNotActive, FlashTicketNotFound, ProductNotFound, SoldOut
from inventory.flashsale import flash_pool_products, flash_pools_reopen_lost
from inventory.flashsale_keys import FREE, INFLIGHT, QUEUE, QUEUE_SEQ, STATS, lua_script, redis_client, text
from inventory.models import Product
from inventory.selectors import product_info_get

# A ticket's hash outlives any sane wait; the queue entry is dropped by the refresh long before.
TICKET_TTL_SECONDS = 6 * 3600


# The head walk shared by join and status (keys passed in: free, queue, stats). ARGV: pid, now, admit window,
# poll window. The first `free` live tickets are admitted; lapsed ones are dropped (their place goes to
# the next). Bounded by free + dropped tickets.
_REFRESH = """
local function refresh(fkey, qkey, skey, pid, now, admit, poll)
  local free = tonumber(redis.call('HGET', fkey, pid) or '0')
  local i = 0
  while i < free do
    local head = redis.call('ZRANGE', qkey, i, i)
    if #head == 0 then break end
    local tkey = 'fs:{fs}:ticket:' .. head[1]
    local f = redis.call('HMGET', tkey, 'admitted', 'seen')
    local admitted, seen = tonumber(f[1] or '0'), tonumber(f[2] or '0')
    if (admitted > 0 and now - admitted > admit) or (admitted == 0 and now - seen > poll) then
      redis.call('ZREM', qkey, head[1])
      redis.call('DEL', tkey)
      redis.call('HINCRBY', skey, 'queue_lapsed', 1)
    else
      if admitted == 0 then redis.call('HSET', tkey, 'admitted', tostring(now)) end
      i = i + 1
    end
  end
end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: free, inflight, queue, stats, seq. ARGV: pid, ticket, admit, poll, ttl, cart key (the ticket's owner).
# Returns {'closed'} | {'sold_out'} | {'ok', rank, admitted_at, now}.
_JOIN = (
    _REFRESH
    + """
local pid, ticket = ARGV[1], ARGV[2]
local admit, poll = tonumber(ARGV[3]), tonumber(ARGV[4])
local free = redis.call('HGET', KEYS[1], pid)
if not free then return {'closed'} end
if tonumber(free) + tonumber(redis.call('HGET', KEYS[2], pid) or '0') <= 0 then return {'sold_out'} end
local now = clock()
local tkey = 'fs:{fs}:ticket:' .. ticket
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[5]), ticket)
redis.call('HSET', tkey, 'product', pid, 'joined', tostring(now), 'seen', tostring(now), 'admitted', '0',
  'cart', ARGV[6])
redis.call('EXPIRE', tkey, tonumber(ARGV[5]))
redis.call('HINCRBY', KEYS[4], 'queue_joined', 1)
refresh(KEYS[1], KEYS[3], KEYS[4], pid, now, admit, poll)
return {'ok', redis.call('ZRANK', KEYS[3], ticket), redis.call('HGET', tkey, 'admitted'), tostring(now)}
"""
)

# KEYS: free, queue, stats. ARGV: pid, ticket ('' = refresh only), admit, poll, cart key (the asker).
# Returns {'closed'} | {'gone'} (also: another cart's ticket) | {'ok'} | {'ok', rank, admitted_at, seen}.
_STATUS = (
    _REFRESH
    + """
local pid, ticket = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[1], pid) == 0 then return {'closed'} end
local now = clock()
local tkey = 'fs:{fs}:ticket:' .. ticket
if ticket ~= '' and redis.call('HGET', tkey, 'cart') ~= ARGV[5] then return {'gone'} end
if ticket ~= '' and redis.call('ZSCORE', KEYS[2], ticket) then
  redis.call('HSET', tkey, 'seen', tostring(now))
end
refresh(KEYS[1], KEYS[2], KEYS[3], pid, now, tonumber(ARGV[3]), tonumber(ARGV[4]))
if ticket == '' then return {'ok'} end
local rank = redis.call('ZRANK', KEYS[2], ticket)
if not rank then return {'gone'} end
return {'ok', rank, redis.call('HGET', tkey, 'admitted'), tostring(now)}
"""
)


@dataclass(frozen=True)
class QueueTicket:
    ticket: str
    product_id: int
    position: int  # 1 = next in line
    admitted: bool
    expires_at: datetime  # admitted: start a checkout before this; waiting: poll again before this


def _windows() -> tuple[float, float]:
    return float(settings.CARTFLOW_FLASH_QUEUE_ADMIT_SECONDS), float(settings.CARTFLOW_FLASH_QUEUE_POLL_SECONDS)


def _ticket(*, ticket: str, product_id: int, reply: list[str]) -> QueueTicket:
    rank, admitted_at, now = int(reply[1]), float(reply[2] or 0), float(reply[3])
    admit, poll = _windows()
    deadline = admitted_at + admit if admitted_at else now + poll
    return QueueTicket(
        ticket=ticket,
        product_id=product_id,
        position=rank + 1,
        admitted=bool(admitted_at),
        expires_at=datetime.fromtimestamp(deadline, tz=UTC),
    )


def flash_sale_product_id(*, sku: str) -> int:
    """The id of the active product with this SKU, which must be in flash-sale mode.

    Raises :class:`ProductNotFound` or :class:`FlashSaleNotActive`. A flash-sale product whose pool Redis
    lost (restart) has it re-opened from the database here, as the take script's caller does."""
    product_id = _sku_to_id(sku)
    info = product_info_get(product_id=product_id) if product_id else None  # cached: polls cost no query
    if info is None:
        raise ProductNotFound(f"No active product has SKU {sku!r}.")
    if not info.flash_sale:
        raise FlashSaleNotActive(f"Product {sku!r} is not in a flash sale.", productId=product_id)
    if not redis_client().hexists(FREE, product_id):
        flash_pools_reopen_lost(product_ids=[product_id])
    return product_id


def _sku_to_id(sku: str) -> int | None:
    """SKU → product id through the cache (a SKU never moves to another product)."""
    key = f"flashqueue:sku:{sku}"
    try:
        cached = cache.get(key)
    except Exception:  # noqa: BLE001 - a cache outage must not break the queue
        cached = None
    if cached is not None:
        return cached
    product_id = Product.objects.filter(sku=sku).values_list("id", flat=True).first()
    if product_id is not None:  # misses are not cached: the product may be created in a minute
        try:
            cache.set(key, product_id, timeout=settings.CARTFLOW_CATALOG_CACHE_SECONDS)
        except Exception:  # noqa: BLE001
            pass
    return product_id


def flash_queue_join(*, product_id: int, cart_key: str) -> QueueTicket:
    """Hold a place in the product's fair queue for the cart ``cart_key``: only that cart may poll the ticket
    or start a checkout with it. Raises :class:`FlashSaleNotActive` when the product has no pool,
    :class:`SoldOut` when no token is free or in flight (nothing can ever return)."""
    ticket = secrets.token_urlsafe(18)
    admit, poll = _windows()
    reply = [
        text(v)
        for v in lua_script("queue_join", _JOIN)(
            keys=[FREE, INFLIGHT, f"{QUEUE}{product_id}", STATS, QUEUE_SEQ],
            args=[product_id, ticket, admit, poll, TICKET_TTL_SECONDS, cart_key],
        )
    ]
    if reply[0] == "closed":
        raise FlashSaleNotActive(f"Product {product_id} is not in a flash sale.", productId=product_id)
    if reply[0] == "sold_out":
        raise SoldOut("This product is sold out.", productId=product_id)
    return _ticket(ticket=ticket, product_id=product_id, reply=reply)


def flash_queue_status(*, product_id: int, ticket: str, cart_key: str) -> QueueTicket:
    """Where a ticket stands now (polling it also keeps it from being dropped as abandoned).

    Raises :class:`FlashTicketNotFound` when the ticket is unknown, was joined by another cart than
    ``cart_key``, was used to start a checkout, or lost its place; :class:`FlashSaleNotActive` when the
    product has no pool."""
    reply = _status(product_id=product_id, ticket=ticket, cart_key=cart_key)
    if reply[0] == "closed":
        raise FlashSaleNotActive(f"Product {product_id} is not in a flash sale.", productId=product_id)
    if reply[0] == "gone":
        raise FlashTicketNotFound(
            "This ticket has no place in the queue for this cart: it was used, joined by another cart, or it "
            "lost its place (not used within its admission window, or not polled). Join again.",
            productId=product_id,
        )
    return _ticket(ticket=ticket, product_id=product_id, reply=reply)


def _status(*, product_id: int, ticket: str, cart_key: str = "") -> list[str]:
    admit, poll = _windows()
    return [
        text(v)
        for v in lua_script("queue_status", _STATUS)(
            keys=[FREE, f"{QUEUE}{product_id}", STATS], args=[product_id, ticket, admit, poll, cart_key]
        )
    ]


def flash_queue_refresh(*, product_id: int) -> None:
    """Admit the head of one product's queue and drop its lapsed tickets now."""
    _status(product_id=product_id, ticket="")


def flash_queue_refresh_all() -> int:
    """Refresh every pool's queue (beat, beside the sweeper). Returns the number of queues refreshed."""
    products = flash_pool_products()
    for product_id in products:
        flash_queue_refresh(product_id=product_id)
    return len(products)


def flash_queue_length(*, product_id: int) -> int:
    return int(redis_client().zcard(f"{QUEUE}{product_id}"))


__all__ = [
    "QueueTicket",
    "flash_queue_join",
    "flash_queue_length",
    "flash_queue_refresh",
    "flash_queue_refresh_all",
    "flash_queue_status",
    "flash_sale_product_id",
]
