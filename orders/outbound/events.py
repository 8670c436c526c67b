"""How an outbound event is written: with the change it announces, never apart from it.

An event row holds the order's row as the change left it (``order_snapshot``), so a delivery made later
still says what happened then. There is one INSERT (:func:`event_insert_sql`), used two ways:

- the saga's writes carry it as one more CTE of the statement that changes the order
  (orders/saga/persistence.py, ``save(..., event=order_event(...))``): it reads the order's new row from
  that statement's own UPDATE, costs no statement, and exists only if the saga's version matched;
- any other service that changes an order (a refund, a cancellation after payment) calls
  :func:`outbound_event_record` inside its transaction, after the change.

An order has one event per ``key`` (a unique index; the INSERT does nothing on a second one), so a change
that is written again (a step re-run by recovery, a decline seen by the HTTP answer and by the webhook)
announces itself once. After the commit the row's id goes to Celery (:func:`event_announce`), which fans it
out to the endpoints (orders/outbound/delivery.py); a lost hand-off is picked up by the sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from celery import signature
from django.db import connection, transaction
from django.utils import timezone

from orders.models import EVENT_TYPES, Order, OutboundEvent, new_event_id

log = structlog.get_logger("cartflow.webhooks_out")

# Event types an order has at most once: their key is the type itself. The others (a refund, a decline)
# happen several times and name what makes each one (a refund's number, a charge).
ONCE_PER_ORDER = ("order.confirmed", "order.fulfilled", "order.cancelled", "checkout.expired")

FAN_OUT_TASK = "orders.tasks.webhook_event_fan_out_task"


@dataclass(frozen=True)
class OrderEvent:
    """An event to write with an order's change: its type, its key, and more members for the body's data."""

    type: str
    key: str
    data: Mapping[str, Any] = field(default_factory=dict)


def order_event(type: str, *, key: str | None = None, data: Mapping[str, Any] | None = None) -> OrderEvent:
    """The event ``type``. ``key``: what makes this one event (default: the type, for the types an order
    has once; required for the others). ``data``: members beside ``order`` in the body's ``data``."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown outbound event type {type!r}")
    if key is None and type not in ONCE_PER_ORDER:
        raise ValueError(f"{type} happens more than once per order: name what makes this one (key=...)")
    if data and "order" in data:
        raise ValueError("data['order'] is the order itself")
    return OrderEvent(type=type, key=(key or type)[:80], data=dict(data or {}))


def event_insert_sql(
    event: OrderEvent, *, source: str, source_params: Sequence[Any], now: datetime
) -> tuple[str, list[Any]]:
    """``INSERT … SELECT … FROM <source> … RETURNING id``: the event, with ``to_jsonb(o)`` of the order row
    that ``source`` names as ``o`` (an UPDATE's ``RETURNING *``, or the table). Nothing when the order
    already has an event with this key, or when ``source`` yields no row."""
    data = OutboundEvent._meta.get_field("data").get_db_prep_save(dict(event.data), connection)
    sql = (
        f"INSERT INTO {connection.ops.quote_name(OutboundEvent._meta.db_table)} "  # noqa: S608 - name from _meta
        "(public_id, type, key, order_id, order_snapshot, data, body, created_at, fanned_out_at) "
        f"SELECT %s, %s, %s, o.id, to_jsonb(o), %s, '', %s, NULL FROM {source} "
        "ON CONFLICT (order_id, key) DO NOTHING RETURNING id"
    )
    return sql, [new_event_id(), event.type, event.key, data, now, *source_params]


def order_table_source(order_id: int, *, also: str = "") -> tuple[str, list[Any]]:
    """The order's row as it stands (in this transaction, or at the start of this statement)."""
    where = f" AND {also}" if also else ""
    return f"{connection.ops.quote_name(Order._meta.db_table)} AS o WHERE o.id = %s{where}", [order_id]


def outbound_event_record(
    *, type: str, order: Order, key: str | None = None, data: Mapping[str, Any] | None = None
) -> int | None:
    """Write the event ``type`` about ``order``, as its row stands now in the caller's transaction, and hand
    it to the deliveries once that transaction commits. One statement.

    Call it inside the transaction that changed the order, after the change, e.g. a partial refund::

        with transaction.atomic():
            ...  # the refund's own writes, the order's refunded amount
            outbound_event_record(type="order.refunded", order=order, key=f"refund:{sequence}",
                                  data={"refund": {"amount": amount, "reason": reason}})

    ``key``: see :func:`order_event` (``order.refunded`` and ``payment.failed`` need one). Returns the
    event row's id, or None when the order already has an event with this key (a retried operation)."""
    event = order_event(type, key=key, data=data)
    source, params = order_table_source(order.pk)
    sql, sql_params = event_insert_sql(event, source=source, source_params=params, now=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(sql, sql_params)
        row = cursor.fetchone()
    if row is None:
        return None
    event_announce_on_commit(row[0])
    return row[0]


def event_announce_on_commit(event_pk: int | None) -> None:
    if event_pk is not None:
        transaction.on_commit(lambda: event_announce(event_pk))


def event_announce(event_pk: int) -> None:
    """Hand the event to the fan-out task. Never waits on the broker (``retry=False``) and never raises: the
    caller is the saga, and the sweep (orders/outbound/delivery.py) picks up an event nobody fanned out."""
    try:
        # By name: orders/tasks.py imports the saga, which imports this module.
        signature(FAN_OUT_TASK, args=(event_pk,)).apply_async(retry=False)
    except Exception:  # noqa: BLE001 - the broker is down: the sweep fans it out
        log.warning("outbound_event_enqueue_failed", event_pk=event_pk)
