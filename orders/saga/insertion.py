"""How a checkout saga is born: ONE INSERT of the saga (holding its lease) and its first log rows, which
checks the client's hold caps (orders/saga/hold_caps.py) in the same statement. Every later write is an
UPDATE in orders/saga/persistence.py."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from orders.models import HOLD_SLOT_INDEX, CheckoutSaga
from orders.saga.hold_caps import HoldGuard, HoldsRefused
from orders.saga.persistence import LogRow, log_rows_cte


class Inserted(enum.Enum):
    SAGA = "saga"  # the saga is written
    CART_HAS_ONE = "cart_has_one"  # the cart's one-active-checkout index holds another
    SLOT_TAKEN = "slot_taken"  # a parallel start of the same client took the same hold slot: count again


def insert_saga(
    saga: CheckoutSaga, *, log: Sequence[LogRow], guard: HoldGuard | None = None
) -> Inserted | HoldsRefused:
    """INSERT the saga (born holding its lease) and its first log rows as one statement; Django's field code
    fills in the defaults and ``auto_now`` fields.

    ``guard``: the hold caps (orders/saga/hold_caps.py), checked by the same statement against the client's
    unfinished checkouts: ``INSERT … SELECT … FROM slot WHERE`` a slot is free and no line is over its limit.
    It writes nothing and answers :class:`HoldsRefused` when a cap is reached."""
    quote = connection.ops.quote_name
    fields = [f for f in CheckoutSaga._meta.concrete_fields if not f.primary_key]
    params: list[Any] = [f.get_db_prep_save(f.pre_save(saga, True), connection) for f in fields]
    placeholders = ["%s"] * len(fields)
    if guard is None:
        guard_sql, guard_params, row, answers, answer_params = "", [], f"VALUES ({', '.join(placeholders)})", "", []
    else:
        guard_sql, guard_params = _hold_guard_ctes(guard)
        slot = [f.name for f in fields].index("hold_slot")
        placeholders[slot] = "slot.n"
        del params[slot]
        row = f"SELECT {', '.join(placeholders)} FROM slot WHERE slot.n IS NOT NULL"
        over = "NULL, NULL"
        if guard.lines:
            row += " AND NOT EXISTS (SELECT 1 FROM over)"
            over = "(SELECT product_id FROM over), (SELECT lim FROM over)"
        answers = f", {over}, (SELECT min(coalesce(expires_at, created_at + %s * interval '1 second')) FROM c)"
        answer_params = [settings.CARTFLOW_RESERVATION_TTL_SECONDS]
    log_sql, log_params = log_rows_cte(log, saga.created_at)
    sql = (
        f"WITH {guard_sql}s AS (INSERT INTO {quote(CheckoutSaga._meta.db_table)} "  # noqa: S608 - names from _meta
        f"({', '.join(quote(f.column) for f in fields)}) {row} RETURNING id, hold_slot), "
        f"{log_sql} SELECT (SELECT id FROM s), (SELECT hold_slot FROM s){answers}"
    )
    try:
        # Inside a caller's transaction (tests), a savepoint keeps a lost insert from poisoning it.
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            with connection.cursor() as cursor:
                cursor.execute(sql, guard_params + params + log_params + answer_params)
                answer = cursor.fetchone()
    except IntegrityError as exc:
        index = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
        return Inserted.SLOT_TAKEN if index == HOLD_SLOT_INDEX else Inserted.CART_HAS_ONE
    if answer[0] is None and guard is not None:
        return HoldsRefused(guard=guard, product_id=answer[2], limit=answer[3], oldest_expiry=answer[4])
    saga.pk, saga.hold_slot = answer[0], answer[1]
    saga._state.adding = False
    saga._state.db = connection.alias
    return Inserted.SAGA


def _hold_guard_ctes(guard: HoldGuard) -> tuple[str, list[Any]]:
    """``c``: the client's unfinished checkouts (by the hold-slot index); ``slot``: the lowest slot none of them
    holds, NULL when the client holds ``max_active`` already; ``over``: the first capped line that, with the
    client's units of that product, goes past its limit."""
    quote = connection.ops.quote_name
    states = ", ".join(["%s"] * len(CheckoutSaga.HOLDING))
    params: list[Any] = [guard.client_key, *CheckoutSaga.HOLDING]
    sql = (
        f"c AS (SELECT hold_slot, expires_at, created_at, lines FROM {quote(CheckoutSaga._meta.db_table)} "  # noqa: S608
        f"WHERE client_key = %s AND state IN ({states})), "
    )
    if guard.max_active:
        sql += (
            "slot AS (SELECT min(g) AS n FROM generate_series(0, %s - 1) AS g "
            "WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.hold_slot = g) AND (SELECT count(*) FROM c) < %s), "
        )
        params += [guard.max_active, guard.max_active]
    else:  # no cap on their number: a slot still serializes the client's parallel starts (units)
        sql += (
            "slot AS (SELECT min(g) AS n FROM generate_series(0, (SELECT count(*) FROM c)) AS g "
            "WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.hold_slot = g)), "
        )
    if guard.lines:
        values = ", ".join(["(%s::bigint, %s::integer, %s::integer)"] * len(guard.lines))
        sql += (
            f"over AS (SELECT v.product_id, v.lim FROM (VALUES {values}) AS v(product_id, quantity, lim) "
            "WHERE v.quantity + (SELECT coalesce(sum((x ->> 'quantity')::integer), 0) "
            "FROM c CROSS JOIN jsonb_array_elements(c.lines) AS x "
            "WHERE (x ->> 'product_id')::bigint = v.product_id) > v.lim ORDER BY v.product_id LIMIT 1), "
        )
        params += [value for line in guard.lines for value in line]
    return sql, params
