"""Where the flash sale lives in Redis: the key layout, the client and the Lua script runner.

The token pool (inventory/flashsale.py), the fair queue (inventory/flashsale_queue.py) and the metrics
collector (inventory/flashsale_metrics.py) all read and write these keys; each imports them from here, so
none of the three imports another to find them.

Every key shares the ``{fs}`` hash tag, so one Lua script may touch all of them on a Cluster:

- ``fs:{fs}:free``            hash product_id → tokens free to take now
- ``fs:{fs}:inflight``        hash product_id → tokens held by checkouts in progress
- ``fs:{fs}:held``            hash holder → JSON ``{"at": epoch, "lines": {product_id: quantity}}``
- ``fs:{fs}:stats``           hash of counters (admitted, sold_out, busy, returned, consumed)
- ``fs:{fs}:queue:<pid>``     sorted set of fair-queue tickets by arrival (inventory/flashsale_queue.py)
- ``fs:{fs}:queue_seq``       the arrival counter that orders the queue
- ``fs:{fs}:ticket:<ticket>`` hash of one ticket (product, joined, seen, admitted)
- ``fs:{fs}:cart:<cart key>`` the holder (checkout id) that holds tokens for this cart now
- ``fs:{fs}:reopen:<pid>``    short lock: one process re-opens a pool lost with Redis

The Lua scripts spell the ``queue:``, ``ticket:`` and ``cart:`` prefixes themselves (they build those
keys from their arguments).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django_redis import get_redis_connection

FREE = "fs:{fs}:free"
INFLIGHT = "fs:{fs}:inflight"
HELD = "fs:{fs}:held"
STATS = "fs:{fs}:stats"
QUEUE = "fs:{fs}:queue:"  # + product id
QUEUE_SEQ = "fs:{fs}:queue_seq"
TICKET = "fs:{fs}:ticket:"  # + ticket
REOPEN_LOCK = "fs:{fs}:reopen:"  # + product id


def redis_client() -> Any:
    """The django-redis connection (the timeouts in settings apply)."""
    return get_redis_connection("default")


_scripts: dict[str, Any] = {}


def lua_script(name: str, source: str) -> Callable[..., Any]:
    """The named Lua script, run on the current connection (redis-py re-loads it after NOSCRIPT).

    Always pass the client: a Script runs on the client it was registered with, and a cache keyed by
    ``id(client)`` would hand a new client, given the id of a freed one, Scripts bound to that dead client
    (in the suite: the private Redis of a restart test, killed since)."""
    client = redis_client()
    script = _scripts.get(name)
    if script is None:
        script = _scripts[name] = client.register_script(source)
    return functools.partial(script, client=client)


def text(value: bytes | str) -> str:
    """A Redis reply as ``str`` (the connection does not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value
