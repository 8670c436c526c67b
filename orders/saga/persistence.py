"""How a checkout saga is written: every write is ONE version-checked statement.

Each ``save_*`` function writes the saga's new fields (``UPDATE … WHERE id = ? AND version = ?``, which also
renews the lease), its SagaStep log rows and, where a step has them, the step's own writes to the order and
the outbox, all as one writable CTE. One statement is atomic without a transaction of its own, and the
extra writes depend on CTE ``s`` (the saga row the UPDATE returned), so they happen only if the version
matched. A lost version check raises CheckoutInProgress: two processes never both drive one saga.

Every write to an Order row goes through here, in the saga's statement: the INSERT of the order and its
lines (:func:`save_order_created`) and one :class:`OrderChange` per later write (:func:`order_paid`,
:func:`order_confirmed`, …). The ORM's UPDATE + ``bulk_create`` were two compiled queries and a
BEGIN/COMMIT per write; tests/cartflow/test_query_budgets.py holds the counts this keeps. A write that
the shop's systems hear about carries its outbound event (``event=``, orders/outbound/events.py) as one more
CTE of the same statement, built from the order row that statement leaves.
After the
checkout has ended, refunds and cancellation change the order with an :class:`OrderChange` too, applied on
its own by :func:`order_change`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from orders.errors import CheckoutInProgress
from orders.models import CheckoutSaga, Order, OrderLine, Outbox, SagaStep
from orders.outbound.events import (
    OrderEvent,
    event_announce_on_commit,
    event_insert_sql,
    order_event,
    order_table_source,
)
from payments.interface import IntentResult

ABOUT_TO, DONE, INDETERMINATE, FAILED = "about_to", "done", "indeterminate", "failed"

LogRow = tuple[str, str, dict[str, Any] | None]  # (step, outcome, details)

_UNLEASED = {"lease_owner": "", "lease_expires_at": None}


def lease_length() -> timedelta:
    return timedelta(seconds=getattr(settings, "CARTFLOW_SAGA_LEASE_SECONDS", 30))


# --- what a step may write to its order -------------------------------------------------------------------


@dataclass(frozen=True)
class OrderChange:
    """One UPDATE of the saga's order (``updated_at`` too), done only if the saga's version matched.
    ``where``: an extra condition that keeps the change from moving the order backwards."""

    assignments: str
    params: tuple[Any, ...]
    where: str = ""
    where_params: tuple[Any, ...] = ()


def order_records_intent(intent: IntentResult) -> OrderChange:
    """The order's (one) PaymentIntent and its status, unless the order was refunded (a refund is final)."""
    return OrderChange(
        "payment_intent_id = %s, payment_status = %s",
        (intent.intent_id, intent.status),
        "payment_status <> %s",
        (Order.PaymentStatus.REFUNDED.value,),
    )


def order_paid(intent: IntentResult) -> OrderChange:
    """awaiting_payment → paid (never backwards), the payment status unless refunded, the PaymentIntent."""
    return OrderChange(
        "status = CASE WHEN status = %s THEN %s ELSE status END, "
        "payment_status = CASE WHEN payment_status = %s THEN payment_status ELSE %s END, payment_intent_id = %s",
        (
            Order.Status.AWAITING_PAYMENT.value,
            Order.Status.PAID.value,
            Order.PaymentStatus.REFUNDED.value,
            intent.status,
            intent.intent_id,
        ),
    )


def order_cancelled() -> OrderChange:
    """Cancelled, unless it was confirmed (a confirmed order is never compensated)."""
    return OrderChange(
        "status = %s",
        (Order.Status.CANCELLED.value,),
        "status NOT IN (%s, %s)",
        (Order.Status.CONFIRMED.value, Order.Status.FULFILLED.value),
    )


def order_flagged_for_review(intent: IntentResult | None) -> OrderChange:
    """Flagged for staff (Stripe refused to capture its authorization), with the PaymentIntent's status when
    the refusal came with it."""
    if intent is None:
        return OrderChange("flagged_for_review = TRUE", ())
    return OrderChange("flagged_for_review = TRUE, payment_status = %s", (intent.status,))


def order_refunded(amount: int) -> OrderChange:
    return OrderChange("payment_status = %s, amount_refunded = %s", (Order.PaymentStatus.REFUNDED.value, amount))


def order_confirmed() -> OrderChange:
    return OrderChange("status = %s", (Order.Status.CONFIRMED.value,))


def order_fulfilled() -> OrderChange:
    """Fulfilled, unless staff cancelled the order while its fulfilment waited in the outbox."""
    return OrderChange("status = %s", (Order.Status.FULFILLED.value,), "status <> %s", (Order.Status.CANCELLED.value,))


# --- after the checkout: what refunds and cancellation write (orders/refunds.py, orders/cancellation.py) ---


def order_refund_total(*, refunded: int, was: int) -> OrderChange:
    """The refunded amount as the order's payment has it, and the payment status ``refunded`` once that is the
    whole total (back to ``succeeded`` when a refund failed afterwards). Only while the row still says
    ``was``: two writers of the amount never interleave, the loser reads again."""
    refunded_status, succeeded = Order.PaymentStatus.REFUNDED.value, Order.PaymentStatus.SUCCEEDED.value
    return OrderChange(
        "amount_refunded = %s, payment_status = CASE WHEN %s >= total AND total > 0 THEN %s "
        "WHEN payment_status = %s THEN %s ELSE payment_status END",
        (refunded, refunded, refunded_status, refunded_status, succeeded),
        "amount_refunded = %s",
        (was,),
    )


def order_cancelled_after_payment() -> OrderChange:
    """A confirmed or fulfilled order cancelled by staff (its money given back first)."""
    return OrderChange(
        "status = %s",
        (Order.Status.CANCELLED.value,),
        "status IN (%s, %s)",
        (Order.Status.CONFIRMED.value, Order.Status.FULFILLED.value),
    )


def order_change(order_pk: int, change: OrderChange) -> bool:
    """One change of an order whose checkout has ended, as its own statement (the saga's writes carry
    theirs in the saga's statement). True when the row matched ``change.where``."""
    where = f" AND {change.where}" if change.where else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {connection.ops.quote_name(Order._meta.db_table)} SET {change.assignments}, updated_at = %s "  # noqa: S608
            f"WHERE id = %s{where}",
            [*change.params, timezone.now(), order_pk, *change.where_params],
        )
        return cursor.rowcount == 1


# --- the saga's writes ------------------------------------------------------------------------------------


def save(
    saga: CheckoutSaga,
    *,
    log: Sequence[LogRow] = (),
    order: OrderChange | None = None,
    event: OrderEvent | None = None,
    release_lease: bool = False,
    log_once: bool = False,
    **fields: Any,
) -> None:
    """The saga's ``fields``, its ``log`` rows and (if the saga has an order) ``order`` and the outbound
    ``event`` about it, in one statement. ``release_lease``: this is the request's last write, and it gives
    the lease up. ``log_once``: the rows record news that may come more than once (Stripe's answer, then the
    webhook, reconciliation, recovery): a row the saga's log already has (same step, outcome and details,
    which name the attempt) is not written again."""
    writes, returning = [], []
    if saga.order_id is not None:
        if order is not None:
            writes.append(_order_update(saga, order, returning=event is not None))
        if event is not None:
            returning.append(f"(SELECT id FROM a{len(writes)})")
            writes.append(_event_insert(saga, event, from_update="a0" if order is not None else None))
    returned = _save(
        saga, fields, log, release_lease=release_lease, writes=writes, returning=returning, log_once=log_once
    )
    if returned:
        event_announce_on_commit(returned[0])


def save_about_to(saga: CheckoutSaga, step: str, *, details: dict[str, Any] | None = None, **fields: Any) -> None:
    """Persist "about to <step>", before the step's side effect."""
    save(saga, log=[(step, ABOUT_TO, details)], step=step, step_status=ABOUT_TO, **fields)


def save_done(
    saga: CheckoutSaga,
    step: str,
    *,
    details: dict[str, Any] | None = None,
    order: OrderChange | None = None,
    event: OrderEvent | None = None,
    release_lease: bool = False,
    log_once: bool = False,
    **fields: Any,
) -> None:
    """Persist "<step> done", after the step's side effect, with what it changed on the order (and the
    outbound event about it)."""
    save(
        saga,
        log=[(step, DONE, details)],
        order=order,
        event=event,
        release_lease=release_lease,
        log_once=log_once,
        step=step,
        step_status=DONE,
        **fields,
    )


def save_outcome(
    saga: CheckoutSaga,
    step: str,
    outcome: str,
    /,
    *,
    details: dict[str, Any] | None = None,
    order: OrderChange | None = None,
    event: OrderEvent | None = None,
    log_once: bool = False,
    **fields: Any,
) -> None:
    """``step`` ended ``failed`` or ``indeterminate`` (its outcome is unknown until Stripe says). The saga's
    own ``step`` field is left as it is unless ``fields`` set it."""
    save(
        saga, log=[(step, outcome, details)], order=order, event=event, log_once=log_once, step_status=outcome, **fields
    )


def save_order_created(
    saga: CheckoutSaga, order: Order, *, log: Sequence[LogRow], release_lease: bool = False, **fields: Any
) -> None:
    """The order and its lines (priced as the saga holds them) INSERTed ahead of the saga's UPDATE, which
    links it: one statement, in a transaction that undoes the order if the saga's version moved (the
    INSERT cannot depend on the UPDATE it feeds). The order is built by Django's field code (defaults,
    public id)."""
    fields_sql = [f for f in Order._meta.concrete_fields if not f.primary_key]
    params: list[Any] = [f.get_db_prep_save(f.pre_save(order, True), connection) for f in fields_sql]
    for line in saga.lines:
        params += [
            line["product_id"],
            line["sku"],
            line["name"],
            line["unit_price"],
            line["quantity"],
            line["unit_price"] * line["quantity"],
        ]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(saga.lines))
    quote = connection.ops.quote_name
    head = _Cte(
        f"o AS (INSERT INTO {quote(Order._meta.db_table)} ({', '.join(quote(f.column) for f in fields_sql)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields_sql))}) RETURNING id), "
        f"ol AS (INSERT INTO {quote(OrderLine._meta.db_table)} "  # noqa: S608
        "(order_id, product_id, sku, name, unit_price, quantity, line_total) "
        f"SELECT o.id, v.* FROM o CROSS JOIN (VALUES {values}) "
        "AS v(product_id, sku, name, unit_price, quantity, line_total))",
        params,
    )
    with transaction.atomic():
        [order.pk] = _save(
            saga,
            fields,
            log,
            release_lease=release_lease,
            head=head,
            returning=["(SELECT id FROM o)"],
            set_sql={"order": "(SELECT id FROM o)"},
        )
    order._state.adding, order._state.db = False, connection.alias
    saga.order = order


def save_confirmed(saga: CheckoutSaga, *, release_lease: bool = False) -> int:
    """Persist "confirm done": the saga confirmed, its order confirmed, the outbox event ``order.confirmed``
    (fulfilment's) and the outbound one (the shop's). Returns the outbox row's id."""
    now = timezone.now()
    payload = Outbox._meta.get_field("payload").get_db_prep_save(
        {"checkoutId": saga.public_id, "orderId": saga.order.public_id}, connection
    )
    outbox = _Cte(
        f"INSERT INTO {connection.ops.quote_name(Outbox._meta.db_table)} "  # noqa: S608
        "(event_type, payload, created_at, processed_at, attempts, last_error) "
        "SELECT %s, %s, %s, NULL, 0, '' FROM s RETURNING id",
        ["order.confirmed", payload, now],
    )
    [outbox_id, event_pk] = _save(
        saga,
        {"step": "confirm", "step_status": DONE, "state": CheckoutSaga.State.CONFIRMED},
        [("confirm", DONE, None)],
        release_lease=release_lease,
        writes=[
            _order_update(saga, order_confirmed(), returning=True),
            outbox,
            _event_insert(saga, order_event("order.confirmed"), from_update="a0"),
        ],
        returning=["(SELECT id FROM a1)", "(SELECT id FROM a2)"],
    )
    event_announce_on_commit(event_pk)
    return outbox_id


def save_lease_taken(saga: CheckoutSaga, *, owner: str) -> bool:
    """Take the saga's lease for ``owner`` (version-checked). False when another write came first."""
    now = timezone.now()
    fields = {"lease_owner": owner, "lease_expires_at": now + lease_length()}
    if not _statement(saga, fields=fields, log=[], now=now)[0]:
        return False
    saga.version += 1
    saga.lease_owner, saga.lease_expires_at = owner, fields["lease_expires_at"]
    return True


# --- the statement ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cte:
    sql: str
    params: list[Any]


def _order_update(saga: CheckoutSaga, change: OrderChange, *, returning: bool = False) -> _Cte:
    """``returning``: the new row comes back, for an event CTE to read (``to_jsonb`` of it)."""
    where = f" AND {change.where}" if change.where else ""
    return _Cte(
        f"UPDATE {connection.ops.quote_name(Order._meta.db_table)} SET {change.assignments}, updated_at = %s "  # noqa: S608
        f"WHERE id = %s AND EXISTS (SELECT 1 FROM s){where}{' RETURNING *' if returning else ''}",
        [*change.params, timezone.now(), saga.order_id, *change.where_params],
    )


def _event_insert(saga: CheckoutSaga, event: OrderEvent, *, from_update: str | None) -> _Cte:
    """The outbound event, from the order row the CTE ``from_update`` returned (so only if that UPDATE
    matched: an order the change leaves alone announces nothing), or else from the order as it stands,
    if the saga's version matched."""
    if from_update is not None:
        source, params = f"{from_update} AS o", []
    else:
        source, params = order_table_source(saga.order_id, also="EXISTS (SELECT 1 FROM s)")
    sql, sql_params = event_insert_sql(event, source=source, source_params=params, now=timezone.now())
    return _Cte(sql, sql_params)


def _save(
    saga: CheckoutSaga,
    fields: dict[str, Any],
    log: Sequence[LogRow],
    *,
    release_lease: bool = False,
    head: _Cte | None = None,
    writes: Sequence[_Cte] = (),
    returning: Sequence[str] = (),
    set_sql: dict[str, str] | None = None,
    log_once: bool = False,
) -> list[Any]:
    """Write, renewing the lease unless this write takes or gives it up; the in-memory saga follows."""
    now = timezone.now()
    if release_lease:
        fields = {**fields, **_UNLEASED}
    if saga.lease_owner and "lease_owner" not in fields:
        fields = {**fields, "lease_expires_at": now + lease_length()}
    matched, returned = _statement(
        saga,
        fields=fields,
        log=log,
        now=now,
        head=head,
        writes=writes,
        returning=returning,
        set_sql=set_sql,
        log_once=log_once,
    )
    if not matched:
        raise CheckoutInProgress("Another request changed this checkout.", retry_after=1, checkoutId=saga.public_id)
    saga.version += 1
    for name, value in fields.items():
        setattr(saga, name, value)
    return returned


def _statement(
    saga: CheckoutSaga,
    *,
    fields: dict[str, Any],
    log: Sequence[LogRow],
    now: datetime,
    head: _Cte | None = None,
    writes: Sequence[_Cte] = (),
    returning: Sequence[str] = (),
    set_sql: dict[str, str] | None = None,
    log_once: bool = False,
) -> tuple[bool, list[Any]]:
    """``WITH [head,] s AS (UPDATE saga …), l AS (INSERT log rows), a0 AS (write), … SELECT matched, …``.

    ``head``: CTEs ahead of the UPDATE, which may refer to them (``set_sql``: fields set to an SQL
    expression); ``writes``: CTEs that depend on ``s``; ``returning``: SQL expressions whose values come back."""
    quote = connection.ops.quote_name
    sets, params = [f"{quote('version')} = {quote('version')} + 1", f"{quote('updated_at')} = %s"], [now]
    for name, expr in (set_sql or {}).items():
        sets.append(f"{quote(CheckoutSaga._meta.get_field(name).column)} = {expr}")
    for name, value in fields.items():
        field = CheckoutSaga._meta.get_field(name)
        if field.is_relation:
            value = getattr(value, "pk", value)
        sets.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    prefix, prefix_params = (f"{head.sql}, ", head.params) if head else ("", [])
    sql = (
        f"WITH {prefix}s AS (UPDATE {quote(CheckoutSaga._meta.db_table)} SET {', '.join(sets)} "  # noqa: S608 - names from _meta
        f"WHERE {quote('id')} = %s AND {quote('version')} = %s RETURNING {quote('id')})"
    )
    params = [*prefix_params, *params, saga.pk, saga.version]
    if log:
        log_sql, log_params = log_rows_cte(log, now, once=log_once)
        sql += ", " + log_sql
        params += log_params
    for n, write in enumerate(writes):
        sql += f", a{n} AS ({write.sql})"
        params += write.params
    sql += " SELECT " + ", ".join(["(SELECT count(*) FROM s)", *returning])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] == 1, list(row[1:])


def log_rows_cte(rows: Sequence[LogRow], now: datetime, *, once: bool = False) -> tuple[str, list[Any]]:
    """``l AS (INSERT …)``: the log rows of the saga that CTE ``s`` returns (none when ``s`` is empty).
    ORDER BY n: ids follow the order of ``rows`` (the log is read by ``at``, then id). ``once``: only rows
    the saga's log does not hold yet (see :func:`save`)."""
    details = SagaStep._meta.get_field("details")
    table = connection.ops.quote_name(SagaStep._meta.db_table)
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    new = (
        f" WHERE NOT EXISTS (SELECT 1 FROM {table} x WHERE x.saga_id = s.id AND x.step = v.step "  # noqa: S608
        "AND x.outcome = v.outcome AND x.details = v.details::jsonb)"
        if once
        else ""
    )
    sql = (
        f"l AS (INSERT INTO {table} (saga_id, step, outcome, details, at) "  # noqa: S608 - names from _meta
        f"SELECT s.id, v.step, v.outcome, v.details, %s FROM s CROSS JOIN (VALUES {values}) "
        f"AS v(n, step, outcome, details){new} ORDER BY v.n)"
    )
    params: list[Any] = [now]
    for n, (step, outcome, step_details) in enumerate(rows):
        params += [n, step, outcome, details.get_db_prep_save(step_details or {}, connection)]
    return sql, params
