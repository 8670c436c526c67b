"""The checkout saga, top to bottom.

    step                   side effect                          compensation
    ---------------------  -----------------------------------  ------------------------------------------
    reserve                hold stock for every line            release        (HELD → RELEASED/EXPIRED)
    create_order           Order + OrderLines (same tx as done) cancel_order   (order cancelled; payments told)
                           — the start ends here, awaiting_payment: no Stripe call —
    create_payment_intent  (only for ``/payment-intent``: the   cancel_payment_intent (only if one exists)
                           storefront confirms with Stripe.js)
                           the order's one PI, unconfirmed
    charge                 attempt 1 without an intent: create  refund         (when the PI had succeeded)
                           AND confirm the order's one PI in
                           one call; otherwise confirm that PI
    confirm                commit the hold, order confirmed,    —  (a confirmed order is never compensated)
                           outbox event order.confirmed
    fulfil                 (outbox consumer) order fulfilled,   —
                           cart cleared, order.confirmed logged

Rules every step follows:

- Persist "about to" (``step_status = about_to``) before the side effect, "done" after it; each is a
  version-checked UPDATE (``WHERE version = ?``) plus its SagaStep log rows in ONE statement (a writable
  CTE, :func:`_write_saga_returning`), which may carry the step's own database writes (the order, its
  status, the outbox event), guarded so they happen only if the version matched. Where one step's "done"
  is followed at once by the next step's "about to", both ride in one write (the saga is inserted
  already "about to reserve"; "reserve done" is written with the order, which ends the start in
  ``awaiting_payment``; "charge done" carries "about to confirm"), and the last write of a request also
  releases the lease: fewer statements, same rule. (A crash between the reserve and the order leaves
  "about to reserve": reserving again for the same holder holds nothing twice.)
- A process drives a saga only while it holds the saga's lease (``lease_owner``/``lease_expires_at``,
  taken with a version-checked UPDATE and renewed by every save). A lost version check raises
  :class:`~orders.errors.CheckoutInProgress`: two processes never both drive one saga.
- Never a Stripe or Redis call inside a database transaction.
- A Stripe outcome that is unknown (timeout, lost response) makes the step ``indeterminate``; only the
  PaymentIntent as Stripe has it settles it (:func:`_settle_charge`). An order has at most one
  PaymentIntent: while a create may have reached Stripe (``create_payment_intent`` or a first ``charge``
  not settled), nothing creates another; the same create is replayed with the same idempotency key (and,
  for a create-and-confirm, the same ``charge_params``), which returns the intent the first one made.
- :class:`~payments.gateway.PaymentProviderBusy` (the shared Stripe budget had no token) means nothing
  was sent: the step is marked failed with no decline and no compensation, the checkout stays open.
- Compensation runs in reverse order and every undo is safe to run twice; before refunding it re-reads
  the saga in case another attempt already completed the order (Medusa #13301).
- A crash leaves the lease to lapse; ``recover_sagas`` (:func:`saga_recover`) resumes from what was
  persisted: it re-runs idempotent steps, asks Stripe for the truth, then finishes or compensates.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from cart.services import CartSnapshot, cart_clear, cart_snapshot
from inventory.errors import InsufficientStock, InventoryContention, ReservationStateError
from inventory.errors import ProductNotFound as ProductUnavailable
from inventory.flashsale import flash_tokens_consume, flash_tokens_return, flash_tokens_take
from inventory.selectors import product_infos_get, reservations_for_holder
from inventory.services import (
    ReserveLine,
    reservation_commit,
    reservation_release,
    reservation_reserve,
)
from orders.errors import (
    CartEmpty,
    CheckoutInProgress,
    CheckoutNotCancellable,
    CheckoutNotConfirmable,
    PaymentDeclined,
    ReservationExpired,
)
from orders.models import CheckoutSaga, Order, OrderLine, Outbox, SagaStep, new_checkout_id
from payments.gateway import (
    IntentResult,
    PaymentMethodInvalid,
    PaymentPermanentError,
    PaymentProviderBusy,
    PaymentTransientError,
    payment_intent_cancel,
    payment_intent_confirm,
    payment_intent_create,
    payment_intent_create_and_confirm,
    payment_intent_retrieve,
    refund_create,
)
from payments.services import payment_mark_order_cancelled

log = structlog.get_logger("cartflow.checkout")
S = CheckoutSaga.State
ABOUT_TO, DONE, INDETERMINATE, FAILED = "about_to", "done", "indeterminate", "failed"


# --- test-only crash injection ----------------------------------------------------------------------


class SimulatedCrash(BaseException):  # noqa: N818 - it is not an error, it is the process dying
    """Raised at an armed crash point; BaseException so no ``except Exception`` in the saga catches it."""


# Names like "charge:before" (after "about to" is saved, before the side effect) and "charge:after"
# (after the side effect, before "done" is saved). One-shot: a point fires once, then is disarmed.
crash_points: set[str] = set()

# A real crash, for tests that SIGKILL a live process (tests/e2e/test_crash_recovery.py): with
# CARTFLOW_TEST_PAUSE_AT=<point> and CARTFLOW_TEST_PAUSE_FILE=<path> in its environment, the first process
# to reach the point creates the file (holding its PID) and blocks there until it is killed. Read once at
# import; unset (always outside tests) it costs one falsy check per point.
_PAUSE_AT = os.environ.get("CARTFLOW_TEST_PAUSE_AT", "")
_PAUSE_FILE = os.environ.get("CARTFLOW_TEST_PAUSE_FILE", "")


def _crash_point(name: str) -> None:
    if name in crash_points:
        crash_points.discard(name)
        raise SimulatedCrash(name)
    if _PAUSE_AT and name == _PAUSE_AT and _PAUSE_FILE:
        _pause_until_killed(name)


def _pause_until_killed(name: str) -> None:
    try:  # O_EXCL: one process pauses; a fresh one started after the kill runs through
        fd = os.open(_PAUSE_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()} {name}\n".encode())
    os.close(fd)
    while True:
        time.sleep(0.05)


# --- persistence: version-checked saves, the lease ---------------------------------------------------


def _lease() -> timedelta:
    return timedelta(seconds=getattr(settings, "CARTFLOW_SAGA_LEASE_SECONDS", 30))


LogRow = tuple[str, str, dict[str, Any] | None]  # (step, outcome, details)


def _save(
    saga: CheckoutSaga,
    *,
    log_step: str | None = None,
    outcome: str = "",
    details: dict[str, Any] | None = None,
    logs: list[LogRow] | None = None,
    also: Callable[[], dict[str, Any] | None] | None = None,
    with_sql: list[_Also] | None = None,
    before: _Before | None = None,
    **fields: Any,
) -> list[Any]:
    """One short transaction: ``also()`` (extra writes, may return more fields), the version-checked
    UPDATE of the saga (renewing the lease), its log rows (``logs`` then ``log_step``) and ``with_sql``
    (more writes in the same statement, done only if the version matched), after ``before`` (writes the
    saga's UPDATE may refer to, undone with the transaction if the version moved). Returns what
    ``before`` and then ``with_sql`` return. Raises CheckoutInProgress if the version moved."""
    now = timezone.now()
    rows: list[LogRow] = list(logs or ())
    if log_step:
        rows.append((log_step, outcome, details))
    with transaction.atomic() if also or before else contextlib.nullcontext():
        extra = also() if also else None
        if extra:
            fields.update(extra)
        if saga.lease_owner and "lease_owner" not in fields:
            fields["lease_expires_at"] = now + _lease()
        matched, returned = _write_saga_returning(
            saga, fields=fields, rows=rows, now=now, with_sql=with_sql or [], before=before
        )
        if not matched:
            raise CheckoutInProgress("Another request changed this checkout.", retry_after=1, checkoutId=saga.public_id)
    saga.version += 1
    for name, value in fields.items():
        if not isinstance(value, _SqlValue):
            setattr(saga, name, value)
    return returned


@dataclass(frozen=True)
class _Before:
    """CTEs written ahead of the saga's UPDATE ``s``, which may refer to them (through a
    :class:`_SqlValue`); ``returning``: SQL expressions whose values come back."""

    sql: str
    params: list[Any]
    returning: tuple[str, ...] = ()


@dataclass(frozen=True)
class _SqlValue:
    """A saga field set to an SQL expression in the saga's UPDATE (e.g. the id a ``_Before`` inserted)."""

    expr: str


@dataclass(frozen=True)
class _Also:
    """One more write in the saga's statement. Its SQL must depend on CTE ``s`` (the saga row the
    version-checked UPDATE returned: ``… AND EXISTS (SELECT 1 FROM s)`` or ``… FROM s``), so that it happens
    only if the version matched. ``returns``: it ends in ``RETURNING id``, and that id comes back."""

    sql: str
    params: list[Any]
    returns: bool = False


def _log_rows_cte(rows: list[LogRow], now: datetime) -> tuple[str, list[Any]]:
    """``l AS (INSERT …)``: the log rows of the saga that CTE ``s`` returns (none when ``s`` is empty).
    ORDER BY n: ids follow the order of ``rows`` (the log is read by ``at``, then id)."""
    details = SagaStep._meta.get_field("details")
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    sql = (
        f"l AS (INSERT INTO {connection.ops.quote_name(SagaStep._meta.db_table)} (saga_id, step, outcome, details, at) "
        f"SELECT s.id, v.step, v.outcome, v.details, %s FROM s CROSS JOIN (VALUES {values}) "
        "AS v(n, step, outcome, details) ORDER BY v.n)"
    )
    params: list[Any] = [now]
    for n, (step, outcome, step_details) in enumerate(rows):
        params += [n, step, outcome, details.get_db_prep_save(step_details or {}, connection)]
    return sql, params


def _write_saga(saga: CheckoutSaga, *, fields: dict[str, Any], rows: list[LogRow], now: datetime) -> bool:
    """:func:`_write_saga_returning` without extra writes: True when the version matched."""
    return _write_saga_returning(saga, fields=fields, rows=rows, now=now, with_sql=[])[0]


def _write_saga_returning(
    saga: CheckoutSaga,
    *,
    fields: dict[str, Any],
    rows: list[LogRow],
    now: datetime,
    with_sql: list[_Also],
    before: _Before | None = None,
) -> tuple[bool, list[Any]]:
    """The version-checked UPDATE of the saga, the INSERT of its log rows and ``with_sql`` as ONE statement
    (a writable CTE: atomic without a transaction of its own). (whether the version matched, the ids the
    ``returns`` writes gave back).

    Every saga write goes through here, several per checkout; the ORM's UPDATE and ``bulk_create`` were
    two compiled queries and, without ``also``, a BEGIN/COMMIT around them."""
    quote = connection.ops.quote_name
    sets, params = [f"{quote('version')} = {quote('version')} + 1", f"{quote('updated_at')} = %s"], [now]
    for name, value in fields.items():
        field = CheckoutSaga._meta.get_field(name)
        if isinstance(value, _SqlValue):
            sets.append(f"{quote(field.column)} = {value.expr}")
            continue
        if field.is_relation:
            value = getattr(value, "pk", value)
        sets.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    head, head_params = (f"{before.sql}, ", before.params) if before else ("", [])
    params = head_params + params
    sql = (
        f"WITH {head}s AS (UPDATE {quote(CheckoutSaga._meta.db_table)} SET {', '.join(sets)} "  # noqa: S608 - names from _meta
        f"WHERE {quote('id')} = %s AND {quote('version')} = %s RETURNING {quote('id')})"
    )
    params += [saga.pk, saga.version]
    if rows:
        log_sql, log_params = _log_rows_cte(rows, now)
        sql += ", " + log_sql
        params += log_params
    for n, extra in enumerate(with_sql):
        sql += f", a{n} AS ({extra.sql})"
        params += extra.params
    returned = [
        *(before.returning if before else ()),
        *(f"(SELECT id FROM a{n})" for n, extra in enumerate(with_sql) if extra.returns),
    ]
    sql += " SELECT " + ", ".join(["(SELECT count(*) FROM s)", *returned])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] == 1, list(row[1:])


def _about_to(saga: CheckoutSaga, step: str, **fields: Any) -> None:
    _save(saga, log_step=step, outcome=ABOUT_TO, step=step, step_status=ABOUT_TO, **fields)
    _crash_point(f"{step}:before")


def _announce(saga: CheckoutSaga, step: str) -> None:
    """Persist "about to <step>" unless the previous step's "done" already persisted it (merged writes)."""
    if saga.step == step and saga.step_status == ABOUT_TO:
        _crash_point(f"{step}:before")
    else:
        _about_to(saga, step)


_UNLEASE = {"lease_owner": "", "lease_expires_at": None}


def _done(saga: CheckoutSaga, step: str, *, details: dict[str, Any] | None = None, **kwargs: Any) -> None:
    _crash_point(f"{step}:after")
    _save(saga, log_step=step, outcome=DONE, details=details, step=step, step_status=DONE, **kwargs)


def _acquire(saga_id: int, *, owner: str, wait: float = 0.0, loaded: CheckoutSaga | None = None) -> CheckoutSaga:
    """Take the saga's lease (version-checked); wait up to ``wait`` seconds for a live lease to end.

    ``loaded``: the saga (with its order) as the caller just read it; the first try uses it instead of
    reading again. If it is stale, the version check fails and the next try reads afresh."""
    deadline = time.monotonic() + wait
    while True:
        saga = loaded if loaded is not None else CheckoutSaga.objects.select_related("order").get(pk=saga_id)
        loaded = None
        now = timezone.now()
        held = saga.lease_owner and saga.lease_owner != owner and saga.lease_expires_at and saga.lease_expires_at > now
        if not held:
            won = _write_saga(saga, fields={"lease_owner": owner, "lease_expires_at": now + _lease()}, rows=[], now=now)
            if won:
                saga.version += 1
                saga.lease_owner, saga.lease_expires_at = owner, now + _lease()
                return saga
        if time.monotonic() >= deadline:
            raise CheckoutInProgress(
                "Another request is working on this checkout.", retry_after=1, checkoutId=saga.public_id
            )
        time.sleep(0.05)


def _release_lease(saga: CheckoutSaga) -> None:
    if not saga.lease_owner:
        return  # the request's last write released it already
    with contextlib.suppress(CheckoutInProgress):  # someone took over a lapsed lease: theirs now
        _save(saga, lease_owner="", lease_expires_at=None)


@contextlib.contextmanager
def _driving(saga_id: int, *, wait: float = 0.0, loaded: CheckoutSaga | None = None) -> Iterator[CheckoutSaga]:
    """Hold the lease while the block drives the saga. A crash (BaseException) keeps it, so it lapses."""
    saga = _acquire(saga_id, owner=uuid.uuid4().hex, wait=wait, loaded=loaded)
    try:
        yield saga
    except Exception:
        _release_lease(saga)
        raise
    _release_lease(saga)


# --- start: reserve → create_order (no Stripe call) ----------------------------------------------------


def _priced_lines(lines: tuple) -> tuple[list[dict[str, Any]], str]:
    """The cart's lines priced from the catalog now (never from the client)."""
    infos = product_infos_get(product_ids=[line.product_id for line in lines])
    priced, currencies = [], set()
    for line in lines:
        info = infos.get(line.product_id)
        if info is None:
            raise ProductUnavailable(f"Product {line.product_id} is no longer sold.", productId=line.product_id)
        currencies.add(info.currency)
        priced.append(
            {
                "product_id": info.id,
                "sku": info.sku,
                "name": info.name,
                "unit_price": info.price,
                "quantity": line.quantity,
            }
        )
    if len(currencies) != 1:
        raise ProductUnavailable("The cart mixes currencies.", productId=lines[0].product_id)
    return priced, currencies.pop()


def checkout_start(
    *,
    cart_key: str,
    token_hash: str | None = None,
    user_id: int | None = None,
    email: str | None = None,
    flash_ticket: str | None = None,
) -> tuple[CheckoutSaga, bool]:
    """Start the cart's checkout, or return its active one. Returns ``(saga, created)``.

    The partial unique index on ``cart_key`` (active states) makes a concurrent second start lose the
    insert; it then waits briefly for the winner to reach ``awaiting_payment`` and returns it.

    Flash sale: the checkout id is chosen first and one token per unit of flash-sale lines is taken in
    Redis before any database work (``sold_out`` / ``flash_sale_busy`` answer without a query). A start
    that does not create the saga gives its tokens back.
    """
    snapshot = cart_snapshot(key=cart_key)
    checkout_id = new_checkout_id()
    if snapshot.lines:
        flash_tokens_take(
            holder=checkout_id,
            lines=[(line.product_id, line.quantity) for line in snapshot.lines],
            ticket=flash_ticket,
            cart_key=cart_key,
        )
    try:
        return _start(snapshot=snapshot, checkout_id=checkout_id, token_hash=token_hash, user_id=user_id, email=email)
    except BaseException:
        _flash_give_back_unless_saved(checkout_id)
        raise


def _flash_give_back_unless_saved(checkout_id: str) -> None:
    """Tokens of a start that created no saga go back now; a saved saga returns them by compensating.

    If even this cannot be decided (the database or Redis is down), the flash sweeper returns them once
    they have stood a minute without a reservation."""
    try:
        if not CheckoutSaga.objects.filter(public_id=checkout_id).exists():
            flash_tokens_return(holder=checkout_id)
    except Exception:  # noqa: BLE001 - keep the original error
        log.warning("flash_tokens_left_to_sweeper", checkout_id=checkout_id)


def _start(
    *, snapshot: CartSnapshot, checkout_id: str, token_hash: str | None, user_id: int | None, email: str | None
) -> tuple[CheckoutSaga, bool]:
    cart_key = snapshot.key
    deadline = time.monotonic() + getattr(settings, "CARTFLOW_CHECKOUT_START_WAIT_SECONDS", 5.0)
    owner = uuid.uuid4().hex
    priced: tuple[list[dict[str, Any]], str] | None = None
    while True:
        # Insert first (the common case), look for the active checkout only when the index says there is one.
        active = None
        if snapshot.lines:
            try:
                priced = priced or _priced_lines(snapshot.lines)
            except ProductUnavailable:
                active = _active_for_cart(cart_key)
                if active is None:
                    raise
        if active is None and priced is not None:
            saga = _insert_saga(
                checkout_id=checkout_id,
                snapshot=snapshot,
                priced=priced,
                token_hash=token_hash,
                user_id=user_id,
                email=email,
                owner=owner,
            )
            if saga is not None:
                try:
                    _run_start(saga, release_lease=True, new_saga=True)
                except Exception:
                    _release_lease(saga)
                    raise
                _release_lease(saga)  # no-op unless a step was skipped
                return saga, True
        if active is None:
            active = _active_for_cart(cart_key)
            if active is None:
                if not snapshot.lines:
                    raise CartEmpty("There is nothing in the cart to check out.")
                continue  # the checkout that held the index ended meanwhile: insert again
        if active.state != S.RESERVED and not active.compensate_to:
            flash_tokens_return(holder=checkout_id)  # the cart's checkout is another one: not ours to hold
            return active, False
        if time.monotonic() >= deadline:
            raise CheckoutInProgress(
                "This cart's checkout is being started.", retry_after=1, checkoutId=active.public_id
            )
        time.sleep(0.05)


def _active_for_cart(cart_key: str) -> CheckoutSaga | None:
    return CheckoutSaga.objects.filter(cart_key=cart_key, state__in=CheckoutSaga.ACTIVE).first()


def _insert_saga(
    *,
    checkout_id: str,
    snapshot: CartSnapshot,
    priced: tuple[list[dict[str, Any]], str],
    token_hash: str | None,
    user_id: int | None,
    email: str | None,
    owner: str,
) -> CheckoutSaga | None:
    """The saga row, born holding its lease and "about to reserve"; None when the cart has an active one."""
    lines, currency = priced
    saga = CheckoutSaga(
        public_id=checkout_id,
        cart_key=snapshot.key,
        cart_version=snapshot.version,
        cart_token_hash=token_hash or "",
        user_id=user_id,
        email=email or "",
        lines=lines,
        currency=currency,
        step="reserve",
        step_status=ABOUT_TO,
        lease_owner=owner,
        lease_expires_at=timezone.now() + _lease(),
    )
    rows: list[LogRow] = [("start", DONE, {"cartVersion": snapshot.version}), ("reserve", ABOUT_TO, None)]
    try:
        # Inside a caller's transaction (tests), a savepoint keeps a lost insert from poisoning it.
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            _insert_saga_row(saga, rows=rows)
    except IntegrityError:
        return None  # a concurrent (or earlier) start holds the cart's index
    return saga


def _insert_saga_row(saga: CheckoutSaga, *, rows: list[LogRow]) -> None:
    """INSERT the saga and its first log rows as ONE statement (a writable CTE), like ``_write_saga``:
    the model's defaults and ``auto_now`` fields are filled in by Django's own field code."""
    quote = connection.ops.quote_name
    fields = [f for f in CheckoutSaga._meta.concrete_fields if not f.primary_key]
    params: list[Any] = [f.get_db_prep_save(f.pre_save(saga, True), connection) for f in fields]
    log_sql, log_params = _log_rows_cte(rows, saga.created_at)
    sql = (
        f"WITH s AS (INSERT INTO {quote(CheckoutSaga._meta.db_table)} "  # noqa: S608 - names from _meta
        f"({', '.join(quote(f.column) for f in fields)}) VALUES ({', '.join(['%s'] * len(fields))}) "
        f"RETURNING {quote('id')}), {log_sql} SELECT id FROM s"
    )
    params += log_params
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        saga.pk = cursor.fetchone()[0]
    saga._state.adding = False
    saga._state.db = connection.alias


def _run_start(saga: CheckoutSaga, *, release_lease: bool = False, new_saga: bool = False) -> None:
    """Drive the start steps from wherever the saga is (also used by recovery).

    ``release_lease``: the last write gives the lease up (the caller does nothing after the start).
    ``new_saga``: the caller has just inserted the saga, so its checkout id holds nothing yet."""
    reserved = None
    if saga.order_id is None and saga.step == "reserve" and saga.step_status != DONE:
        reserved = _step_reserve(saga, new_holder=new_saga)
    if saga.order_id is None:
        _step_create_order(saga, reserved=reserved, release_lease=release_lease)


def _reserve_lines(saga: CheckoutSaga) -> list[ReserveLine]:
    return [ReserveLine(product_id=line["product_id"], quantity=line["quantity"]) for line in saga.lines]


@dataclass(frozen=True)
class _Reserved:
    """What the reserve step did, written together with the order (see :func:`_step_reserve`)."""

    units: int
    expires_at: datetime


def _step_reserve(saga: CheckoutSaga, *, new_holder: bool = False) -> _Reserved:
    """Hold the stock. "reserve done" is not written here but in the order's transaction, one transaction
    fewer per start: a crash in between leaves "about to reserve", and reserving again for the same holder
    holds nothing twice (``reservation_reserve`` is idempotent per holder)."""
    _announce(saga, "reserve")
    try:
        held = reservation_reserve(lines=_reserve_lines(saga), holder=saga.public_id, new_holder=new_holder)
    except (InsufficientStock, InventoryContention) as exc:
        _fail_and_compensate(saga, "reserve", exc, to=S.FAILED)
        raise
    _crash_point("reserve:after")
    return _Reserved(units=sum(r.quantity for r in held), expires_at=min(r.expires_at for r in held))


def _compensate_release(saga: CheckoutSaga, *, to: str) -> None:
    _about_to(saga, "release")
    released = reservation_release(holder=saga.public_id, status="EXPIRED" if to == S.EXPIRED else "RELEASED")
    returned = flash_tokens_return(holder=saga.public_id)  # safe twice; outside any transaction
    _done(saga, "release", details={"units": released, "flashTokens": returned})


def _step_create_order(saga: CheckoutSaga, *, reserved: _Reserved | None = None, release_lease: bool = False) -> None:
    """``reserved``: the reserve step just ran in this process and its "done" is written here too.

    The last step of the start: its "done" moves the saga to ``awaiting_payment``. The PaymentIntent is
    created when the buyer pays (:func:`checkout_confirm`, or :func:`checkout_payment_intent`)."""
    if reserved is None:
        _announce(saga, "create_order")
    else:
        _crash_point("create_order:before")
    _crash_point("create_order:after")  # the order and "done" commit together: a crash here left no order

    # The order, its lines and "create_order done" (the saga awaiting payment) in one statement (after a
    # reserve in this process, with "reserve done" first: the step trail reads as before). The order is
    # built by Django's field code (defaults, public id), inserted ahead of the saga's UPDATE, and undone
    # with the transaction if the saga's version moved.
    subtotal = sum(line["unit_price"] * line["quantity"] for line in saga.lines)
    order = Order(
        user_id=saga.user_id,
        email=saga.email,
        cart_key=saga.cart_key,
        cart_token_hash=saga.cart_token_hash,
        currency=saga.currency,
        subtotal=subtotal,
        total=subtotal,
    )
    logs: list[LogRow] = [("create_order", DONE, None)]
    more: dict[str, Any] = dict(_UNLEASE) if release_lease else {}
    if reserved is not None:
        logs[:0] = [("reserve", DONE, {"units": reserved.units}), ("create_order", ABOUT_TO, None)]
        more["expires_at"] = reserved.expires_at
    [order.pk] = _save(
        saga,
        logs=logs,
        step="create_order",
        step_status=DONE,
        state=S.AWAITING_PAYMENT,
        before=_order_insert(order, saga.lines),
        order=_SqlValue("(SELECT id FROM o)"),
        **more,
    )
    order._state.adding, order._state.db = False, connection.alias
    saga.order = order


def _order_insert(order: Order, lines: list[dict[str, Any]]) -> _Before:
    """CTEs ``o`` (the order) and ``ol`` (its lines) for the saga's statement; returns the order id."""
    quote = connection.ops.quote_name
    fields = [f for f in Order._meta.concrete_fields if not f.primary_key]
    params: list[Any] = [f.get_db_prep_save(f.pre_save(order, True), connection) for f in fields]
    for line in lines:
        params += [
            line["product_id"], line["sku"], line["name"], line["unit_price"], line["quantity"],
            line["unit_price"] * line["quantity"],
        ]  # fmt: skip
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(lines))
    sql = (
        f"o AS (INSERT INTO {quote(Order._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING id), "
        f"ol AS (INSERT INTO {quote(OrderLine._meta.db_table)} "  # noqa: S608
        "(order_id, product_id, sku, name, unit_price, quantity, line_total) "
        f"SELECT o.id, v.* FROM o CROSS JOIN (VALUES {values}) "
        "AS v(product_id, sku, name, unit_price, quantity, line_total))"
    )
    return _Before(sql, params, returning=("(SELECT id FROM o)",))


def _compensate_cancel_order(saga: CheckoutSaga) -> None:
    _about_to(saga, "cancel_order")
    payment_mark_order_cancelled(order_id=saga.order.public_id)

    def cancel() -> None:
        Order.objects.filter(pk=saga.order_id).exclude(status__in=["confirmed", "fulfilled"]).update(
            status=Order.Status.CANCELLED, updated_at=timezone.now()
        )

    _done(saga, "cancel_order", also=cancel)


# --- the order's one PaymentIntent: created when the buyer pays, never twice ----------------------------------


def _pending(saga: CheckoutSaga, step: str) -> bool:
    """``step`` was about to happen (or its outcome is unknown): a Stripe call may have reached Stripe."""
    return saga.step == step and saga.step_status in (ABOUT_TO, INDETERMINATE)


def _settle_in_flight(saga: CheckoutSaga) -> None:
    """Learn the outcome of a Stripe call that may have happened before anything else is sent: a create
    whose answer was lost is replayed with the same key (Stripe returns the intent it made), so an order
    never gets a second PaymentIntent."""
    if _pending(saga, "create_payment_intent") and not saga.payment_intent_id:
        _step_create_payment_intent(saga)
    elif _pending(saga, "charge"):
        _settle_charge(saga)


def checkout_payment_intent(*, saga_id: int, loaded: CheckoutSaga | None = None) -> CheckoutSaga:
    """The checkout's one PaymentIntent for a storefront that confirms with Stripe.js: created (not
    confirmed) if it does not exist yet, the same one on every call. The webhook then drives the saga as if
    the server had confirmed (:func:`saga_on_intent`); a later :func:`checkout_confirm` confirms it.

    Raises ReservationExpired, CheckoutNotConfirmable, CheckoutInProgress, PaymentProviderBusy (nothing
    sent), PaymentTransientError (the create's outcome is unknown: the next call replays it).
    """
    wait = getattr(settings, "CARTFLOW_CHECKOUT_CONFIRM_WAIT_SECONDS", 5.0)
    with _driving(saga_id, wait=wait, loaded=loaded) as saga:
        _settle_in_flight(saga)
        if saga.payment_intent_id:
            return saga
        _check_payable(saga)
        _step_create_payment_intent(saga, release_lease=True)
        return saga


def _check_payable(saga: CheckoutSaga) -> None:
    """Raise unless the checkout may be paid now (an open checkout whose hold has not lapsed)."""
    if saga.state == S.EXPIRED:
        raise ReservationExpired(checkoutId=saga.public_id)
    if saga.state not in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION) or saga.compensate_to:
        raise CheckoutNotConfirmable(
            f"The checkout is {saga.state}.", checkoutId=saga.public_id, checkoutStatus=saga.state
        )
    if _hold_lapsed(saga):
        _compensate(saga, to=S.EXPIRED)
        if saga.state not in (S.CONFIRMED, S.FULFILLED):
            raise ReservationExpired(checkoutId=saga.public_id)


def _step_create_payment_intent(saga: CheckoutSaga, *, release_lease: bool = False) -> None:
    """Create the order's PaymentIntent without confirming it (keyed by the order: a replay after a lost
    answer gets the same intent back)."""
    order = saga.order
    replay = _pending(saga, "create_payment_intent")
    _announce(saga, "create_payment_intent")
    try:
        intent = payment_intent_create(
            order_id=order.public_id,
            checkout_id=saga.public_id,
            amount=order.total,
            currency=order.currency,
            email=order.email or None,
        )
    except PaymentProviderBusy:
        # Nothing was sent now; an earlier create whose answer was lost stays to be replayed.
        status = INDETERMINATE if replay else FAILED
        _save(saga, log_step="create_payment_intent", outcome=status, step_status=status,
              details={"error": PaymentProviderBusy.code})  # fmt: skip
        raise
    except PaymentTransientError as exc:
        _save(saga, log_step="create_payment_intent", outcome=INDETERMINATE, step_status=INDETERMINATE,
              details={"error": str(exc)[:200]})  # fmt: skip
        raise
    except PaymentPermanentError as exc:
        _save(saga, log_step="create_payment_intent", outcome=FAILED, step_status=FAILED,
              details={"error": exc.stripe_code or str(exc)[:200]})  # fmt: skip
        raise
    _done(
        saga,
        "create_payment_intent",
        also=_order_payment(order.pk, intent),
        details={"intent": intent.intent_id},
        payment_intent_id=intent.intent_id,
        client_secret=intent.client_secret or "",
        **(_UNLEASE if release_lease else {}),
    )
    order.payment_intent_id, order.payment_status = intent.intent_id, intent.status


def _link_fields(saga: CheckoutSaga, intent: IntentResult) -> dict[str, Any]:
    """The saga learns the order's one PaymentIntent (the first create-and-confirm, or a replay of it)."""
    if saga.payment_intent_id:
        return {}
    return {"payment_intent_id": intent.intent_id, "client_secret": intent.client_secret or ""}


def _compensate_cancel_payment_intent(saga: CheckoutSaga) -> IntentResult | None:
    """Cancel the PI if the order has one. Returns the PI; ``succeeded`` means it was paid and could not be
    cancelled. A checkout that never created one costs Stripe nothing here."""
    order = saga.order
    if not saga.payment_intent_id:
        if _pending(saga, "charge"):
            _settle_charge(saga)  # a create-and-confirm may have charged: learn it (raises if Stripe is away)
        elif _pending(saga, "create_payment_intent"):
            # The create may have reached Stripe: ask again with the same key to learn the id, then cancel.
            try:
                intent = payment_intent_create(
                    order_id=order.public_id, checkout_id=saga.public_id, amount=order.total, currency=order.currency,
                    email=order.email or None,
                )  # fmt: skip
            except (PaymentTransientError, PaymentPermanentError, PaymentProviderBusy):
                return None  # nothing was confirmed on it; a stray PI without a payment method moves no money
            _save(saga, payment_intent_id=intent.intent_id, also=_order_payment(order.pk, intent))
        if not saga.payment_intent_id:
            return None
    _about_to(saga, "cancel_payment_intent")
    intent = payment_intent_cancel(order_id=order.public_id, intent_id=saga.payment_intent_id)
    _done(saga, "cancel_payment_intent", details={"status": intent.status}, also=_order_payment(order.pk, intent))
    return intent


# --- confirm: charge → confirm ---------------------------------------------------------------------------


def checkout_confirm(
    *,
    saga_id: int,
    payment_method: str | None = None,
    confirmation_token: str | None = None,
    loaded: CheckoutSaga | None = None,
) -> CheckoutSaga:
    """Pay the checkout (create and confirm its PaymentIntent, or confirm the one it has) and, once paid,
    confirm the order. Exactly one of ``payment_method`` and ``confirmation_token``.

    ``loaded``: the saga with its order, just read by the caller (saves reading it again).

    Returns the saga (``confirmed``/``fulfilled``, or ``requires_action`` for 3-D Secure). Raises
    PaymentDeclined (the checkout stays open), PaymentMethodInvalid (likewise), ReservationExpired,
    CheckoutNotConfirmable, CheckoutInProgress, PaymentProviderBusy (nothing sent, the checkout stays open),
    PaymentTransientError (outcome unknown: the step is ``indeterminate``).
    """
    method = {"confirmation_token": confirmation_token} if confirmation_token else {"payment_method": payment_method}
    wait = getattr(settings, "CARTFLOW_CHECKOUT_CONFIRM_WAIT_SECONDS", 5.0)
    with _driving(saga_id, wait=wait, loaded=loaded) as saga:
        _settle_in_flight(saga)
        if saga.state == S.PAID and not saga.compensate_to:
            _step_confirm(saga)
        if saga.state in (S.CONFIRMED, S.FULFILLED):
            return saga
        _check_payable(saga)
        if saga.state in (S.CONFIRMED, S.FULFILLED):  # it had been paid after all, and the stock was there
            return saga
        _step_charge(saga, method=method)
        if saga.state == S.PAID:
            _step_confirm(saga, release_lease=True)
        return saga


def _hold_lapsed(saga: CheckoutSaga) -> bool:
    rows = reservations_for_holder(holder=saga.public_id)
    now = timezone.now()
    return not rows or any(
        r.status in ("EXPIRED", "RELEASED") or (r.status == "HELD" and r.expires_at <= now) for r in rows
    )


def _charge_call(saga: CheckoutSaga) -> IntentResult:
    """The current attempt's Stripe call. Without an intent: create AND confirm the order's one PaymentIntent
    in one call; with one (a retry after a decline, or after ``/payment-intent``): confirm that intent.
    Both are keyed by order + attempt, so replaying an attempt repeats the same request."""
    order, method = saga.order, saga.charge_params
    if saga.payment_intent_id:
        return payment_intent_confirm(
            order_id=order.public_id, intent_id=saga.payment_intent_id, attempt=saga.attempt, **method
        )
    return payment_intent_create_and_confirm(
        order_id=order.public_id,
        checkout_id=saga.public_id,
        amount=order.total,
        currency=order.currency,
        email=order.email or None,
        attempt=saga.attempt,
        **method,
    )


def _step_charge(saga: CheckoutSaga, *, method: dict[str, str | None]) -> None:
    # Every attempt has its own Stripe idempotency key (order + attempt) and persists what it pays with
    # before the call, so a lost answer is replayed exactly; one PaymentIntent per order means at most one
    # capture whatever happens.
    _about_to(saga, "charge", attempt=saga.attempt + 1, charge_params=method, last_error_code="", last_error_message="")
    try:
        intent = _charge_call(saga)
    except PaymentProviderBusy:
        # Nothing was sent: no decline, no compensation, the hold is kept; the same request may be retried.
        _save(saga, log_step="charge", outcome=FAILED, step_status=FAILED, details={"error": PaymentProviderBusy.code})
        raise
    except PaymentMethodInvalid as exc:
        _record_method_invalid(saga, exc)
        raise
    except PaymentTransientError as exc:
        _save(saga, log_step="charge", outcome=INDETERMINATE, step_status=INDETERMINATE, details={"error": str(exc)})
        _settle_charge(saga)  # maybe Stripe answers a retrieve (or the replayed create) now
        if saga.step_status == INDETERMINATE or saga.state == S.AWAITING_PAYMENT:
            raise
        return
    except PaymentPermanentError as exc:
        _record_decline(saga, code=exc.stripe_code or "invalid_payment_method", message=str(exc))
        raise PaymentDeclined(
            str(exc), declineCode=exc.stripe_code or "invalid_payment_method", checkoutId=saga.public_id
        ) from exc
    _apply_intent(saga, intent, raise_decline=True)


def _record_method_invalid(saga: CheckoutSaga, exc: PaymentMethodInvalid) -> None:
    """Stripe refused what the buyer pays with: not a decline, the checkout stays as it was."""
    intent = exc.intent
    _save(
        saga,
        log_step="charge",
        outcome=FAILED,
        details={"error": PaymentMethodInvalid.code},
        step="charge",
        step_status=FAILED,
        last_error_code=PaymentMethodInvalid.code,
        last_error_message=str(exc)[:2000],
        also=_order_payment(saga.order_id, intent) if intent is not None else None,
        **(_link_fields(saga, intent) if intent is not None else {}),
    )


def _settle_charge(saga: CheckoutSaga) -> None:
    """An unknown charge outcome is settled only by the PaymentIntent as Stripe has it now: retrieved when
    the saga knows it, else by replaying the attempt's create-and-confirm (same key, same parameters), which
    returns what the first call did."""
    if saga.payment_intent_id:
        intent = payment_intent_retrieve(intent_id=saga.payment_intent_id)
    elif not saga.charge_params:
        intent = None
    else:
        try:
            intent = _charge_call(saga)
        except PaymentMethodInvalid as exc:
            _record_method_invalid(saga, exc)
            return
    if intent is None or (
        intent.status in ("requires_payment_method", "requires_confirmation") and not intent.declined
    ):
        # The confirm never took effect: nothing charged, the checkout stays open.
        _save(
            saga,
            log_step="charge",
            outcome=FAILED,
            step_status=FAILED,
            state=S.AWAITING_PAYMENT,
            details={"settled": intent.status if intent else "not_sent"},
            **(_link_fields(saga, intent) if intent is not None else {}),
        )
        return
    _apply_intent(saga, intent, raise_decline=False)


def _apply_intent(saga: CheckoutSaga, intent: IntentResult, *, raise_decline: bool) -> None:
    """Move the saga forward to what the PaymentIntent says (never backwards). A saga that did not know
    its PaymentIntent yet (the first create-and-confirm) records it in the same write."""
    order_sync = _order_payment(saga.order_id, intent)
    link = _link_fields(saga, intent)
    if intent.succeeded:
        _crash_point("charge:after")
        logs: list[LogRow] = [("charge", DONE, {"status": intent.status})]
        fields: dict[str, Any] = {"step": "charge", "step_status": DONE}
        if not saga.compensate_to:
            # Every caller confirms a paid saga next: "about to confirm" rides on "charge done".
            logs.append(("confirm", ABOUT_TO, None))
            fields = {"step": "confirm", "step_status": ABOUT_TO}
        _save(saga, logs=logs, state=S.PAID, next_action=None, with_sql=[_order_paid(saga, intent)], **fields, **link)
    elif intent.requires_action:
        _done(
            saga,
            "charge",
            details={"status": intent.status},
            state=S.REQUIRES_ACTION,
            next_action=intent.next_action,
            also=order_sync,
            **{**link, "client_secret": intent.client_secret or saga.client_secret},
        )
    elif intent.declined:
        code = intent.decline_code or intent.error_code or "card_declined"
        _record_decline(saga, code=code, message=intent.error_message or "", also=order_sync, **link)
        if raise_decline:
            raise PaymentDeclined(
                intent.error_message or "The card was declined.", declineCode=code, checkoutId=saga.public_id
            )
    elif intent.canceled:
        if link:
            _save(saga, also=order_sync, **link)
        _compensate(saga, to=S.FAILED, code="payment_canceled", message="The PaymentIntent was canceled.")
    else:  # processing: the webhook or recovery settles it
        _save(
            saga,
            log_step="charge",
            outcome=INDETERMINATE,
            step_status=INDETERMINATE,
            details={"status": intent.status},
            also=order_sync if link else None,
            **link,
        )


def _record_decline(saga: CheckoutSaga, *, code: str, message: str, also: Callable | None = None, **link: Any) -> None:
    _save(
        saga,
        log_step="charge",
        outcome=FAILED,
        details={"declineCode": code},
        step="charge",
        step_status=FAILED,
        state=S.AWAITING_PAYMENT,
        next_action=None,
        last_error_code=code,
        last_error_message=message[:2000],
        also=also,
        **link,
    )


def _order_payment(order_pk: int | None, intent: IntentResult) -> Callable[[], None]:
    def sync() -> None:
        if order_pk is not None:
            Order.objects.filter(pk=order_pk).exclude(payment_status="refunded").update(
                payment_intent_id=intent.intent_id, payment_status=intent.status, updated_at=timezone.now()
            )

    return sync


def _order_paid(saga: CheckoutSaga, intent: IntentResult) -> _Also:
    """In the saga's statement: awaiting_payment → paid (never backwards), the payment status unless
    refunded, and the order's (one) PaymentIntent."""
    table = connection.ops.quote_name(Order._meta.db_table)
    return _Also(
        f"UPDATE {table} SET status = CASE WHEN status = %s THEN %s ELSE status END, "  # noqa: S608
        "payment_status = CASE WHEN payment_status = %s THEN payment_status ELSE %s END, "
        "payment_intent_id = %s, updated_at = %s WHERE id = %s AND EXISTS (SELECT 1 FROM s)",
        [
            Order.Status.AWAITING_PAYMENT.value,
            Order.Status.PAID.value,
            Order.PaymentStatus.REFUNDED.value,
            intent.status,
            intent.intent_id,
            timezone.now(),
            saga.order_id,
        ],
    )


def _step_confirm(saga: CheckoutSaga, *, release_lease: bool = False) -> None:
    _announce(saga, "confirm")
    try:
        reservation_commit(holder=saga.public_id)  # already committed → no-op
    except ReservationStateError:
        # The hold lapsed while the buyer paid: take the stock again if it is still there, else refund.
        try:
            reservation_reserve(lines=_reserve_lines(saga), holder=saga.public_id)
            reservation_commit(holder=saga.public_id)
        except (InsufficientStock, ReservationStateError) as exc:
            _fail_and_compensate(saga, "confirm", exc, to=S.FAILED)
            return

    # The order confirmed and its outbox event, in the saga's "confirm done" statement.
    now = timezone.now()
    quote = connection.ops.quote_name
    payload = Outbox._meta.get_field("payload").get_db_prep_save(
        {"checkoutId": saga.public_id, "orderId": saga.order.public_id}, connection
    )
    writes = [
        _Also(
            f"UPDATE {quote(Order._meta.db_table)} SET status = %s, updated_at = %s "  # noqa: S608
            "WHERE id = %s AND EXISTS (SELECT 1 FROM s)",
            [Order.Status.CONFIRMED.value, now, saga.order_id],
        ),
        _Also(
            f"INSERT INTO {quote(Outbox._meta.db_table)} "  # noqa: S608
            "(event_type, payload, created_at, processed_at, attempts, last_error) "
            "SELECT %s, %s, %s, NULL, 0, '' FROM s RETURNING id",
            ["order.confirmed", payload, now],
            returns=True,
        ),
    ]
    _crash_point("confirm:after")
    [outbox_id] = _save(
        saga,
        log_step="confirm",
        outcome=DONE,
        step="confirm",
        step_status=DONE,
        state=S.CONFIRMED,
        with_sql=writes,
        **(_UNLEASE if release_lease else {}),
    )
    transaction.on_commit(lambda: _enqueue_outbox(outbox_id))
    flash_tokens_consume(holder=saga.public_id)  # sold: the sweeper consumes them if we crash before this
    log.info("checkout_confirmed", checkout_id=saga.public_id, order_id=saga.order.public_id)


def _enqueue_outbox(outbox_id: int) -> None:
    from orders.tasks import outbox_process_task

    try:
        outbox_process_task.delay(outbox_id)
    except Exception:  # noqa: BLE001 - the broker is down: the beat sweep re-enqueues unprocessed rows
        log.warning("outbox_enqueue_failed", outbox_id=outbox_id)


# --- fulfil (the outbox consumer) --------------------------------------------------------------------------


def saga_fulfil(*, checkout_id: str, outbox_id: int | None = None) -> CheckoutSaga:
    """Mark the order fulfilled, clear the cart, emit order.confirmed. Idempotent (at-least-once consumer)."""
    saga_pk = CheckoutSaga.objects.values_list("pk", flat=True).get(public_id=checkout_id)
    with _driving(saga_pk, wait=2.0) as saga:
        if saga.state == S.CONFIRMED:
            _about_to(saga, "fulfil")
            # Only what was checked out: a cart the buyer changed since the start is left alone.
            cleared = cart_clear(key=saga.cart_key, if_version=saga.cart_version)
            order = saga.order
            log.info(
                "order.confirmed",
                order_id=order.public_id,
                checkout_id=saga.public_id,
                amount=order.total,
                currency=order.currency,
                email=order.email,
                cart_cleared=cleared,
            )

            def fulfil() -> None:
                Order.objects.filter(pk=saga.order_id).update(status=Order.Status.FULFILLED, updated_at=timezone.now())

            _done(saga, "fulfil", state=S.FULFILLED, also=fulfil, details={"cartCleared": cleared})
        if outbox_id is not None and saga.state == S.FULFILLED:
            Outbox.objects.filter(pk=outbox_id, processed_at__isnull=True).update(processed_at=timezone.now())
        return saga


# --- compensation: refund → cancel_payment_intent → cancel_order → release -------------------------------


def _fail_and_compensate(saga: CheckoutSaga, step: str, exc: Exception, *, to: str) -> None:
    code = getattr(exc, "code", None) or exc.__class__.__name__
    _save(
        saga,
        log_step=step,
        outcome=FAILED,
        step_status=FAILED,
        details={"error": code},
        last_error_code=str(code)[:64],
        last_error_message=str(exc)[:2000],
    )
    _compensate(saga, to=to, code=str(code), message=str(exc))


def _compensate(saga: CheckoutSaga, *, to: str, code: str = "", message: str = "") -> None:
    """Undo in reverse order, each undo safe twice, then end in ``to`` (failed / expired / cancelled).

    When expiring finds the PaymentIntent already succeeded (the buyer paid as the hold lapsed), the order
    is confirmed if the stock can still be taken, otherwise refunded.
    """
    if saga.state in (S.CONFIRMED, S.FULFILLED) or saga.is_terminal:
        return
    if saga.compensate_to != to or code:
        fields: dict[str, Any] = {"compensate_to": to}
        if code:
            fields.update(last_error_code=code[:64], last_error_message=message[:2000])
        _save(saga, log_step="compensate", outcome=to, details={"reason": code}, **fields)
    if saga.order_id is not None:
        intent = _compensate_cancel_payment_intent(saga)
        if intent is not None and intent.succeeded:
            if to == S.EXPIRED and _take_stock_again(saga):
                _save(
                    saga,
                    log_step="charge",
                    outcome=DONE,
                    details={"late": True},
                    compensate_to="",
                    step="charge",
                    step_status=DONE,
                    state=S.PAID,
                    with_sql=[_order_paid(saga, intent)],
                )
                _step_confirm(saga)
                return
            _compensate_refund(saga, intent)
            if saga.state in (S.CONFIRMED, S.FULFILLED):
                return
        _compensate_cancel_order(saga)
    _compensate_release(saga, to=to)
    _save(saga, log_step="end", outcome=to, state=to, compensate_to="", next_action=None)
    log.info("checkout_compensated", checkout_id=saga.public_id, state=to, reason=code)


def _take_stock_again(saga: CheckoutSaga) -> bool:
    try:
        reservation_reserve(lines=_reserve_lines(saga), holder=saga.public_id)
        return True
    except (InsufficientStock, InventoryContention, ReservationStateError):
        return False


def _compensate_refund(saga: CheckoutSaga, intent: IntentResult) -> None:
    # Medusa #13301: another attempt (a webhook, a second confirm) may have completed the order meanwhile.
    fresh = CheckoutSaga.objects.get(pk=saga.pk)
    if fresh.state in (S.CONFIRMED, S.FULFILLED) or fresh.version != saga.version:
        saga.state = fresh.state
        return
    # Always ask Stripe (keyed by the order): a refund that already happened is returned, not repeated.
    _about_to(saga, "refund")
    refund = refund_create(order_id=saga.order.public_id, intent_id=intent.intent_id)

    def refunded() -> None:
        Order.objects.filter(pk=saga.order_id).update(
            payment_status=Order.PaymentStatus.REFUNDED, amount_refunded=refund.amount, updated_at=timezone.now()
        )

    _done(saga, "refund", details={"refund": refund.refund_id, "amount": refund.amount}, also=refunded)


def checkout_cancel(*, saga_id: int) -> CheckoutSaga:
    """The buyer gives up: compensate to ``cancelled``. A paid or ended checkout cannot be cancelled."""
    with _driving(saga_id, wait=2.0) as saga:
        if saga.state == S.CANCELLED:
            return saga
        if saga.step == "charge" and saga.step_status in (ABOUT_TO, INDETERMINATE):
            _settle_charge(saga)
        if saga.compensate_to == S.CANCELLED:
            # An earlier cancel was cut short (Redis or Stripe failed mid-compensation): every undo is safe
            # twice, so finishing it here answers the retry as the first cancel would have.
            _compensate(saga, to=S.CANCELLED)
            return saga
        if saga.state not in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION) or saga.compensate_to:
            raise CheckoutNotCancellable(
                f"The checkout is {saga.state}.", checkoutId=saga.public_id, checkoutStatus=saga.state
            )
        _compensate(saga, to=S.CANCELLED, code="cancelled_by_buyer", message="Cancelled by the buyer.")
        return saga


# --- time and crashes: expiry, webhooks, recovery ---------------------------------------------------------


def saga_on_reservation_expired(holder: str) -> None:
    """inventory's expired listener: the hold of checkout ``holder`` expired → compensate to ``expired``."""
    saga_pk = CheckoutSaga.objects.filter(public_id=holder).values_list("pk", flat=True).first()
    if saga_pk is None:
        return
    try:
        with _driving(saga_pk) as saga:
            _expire_if_open(saga)
    except CheckoutInProgress:
        pass  # a live process is driving it; if it dies, recovery sees the expired hold


def _expire_if_open(saga: CheckoutSaga) -> None:
    if saga.step == "charge" and saga.step_status in (ABOUT_TO, INDETERMINATE):
        _settle_charge(saga)
    if saga.state in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION, S.RESERVED) or saga.compensate_to:
        _compensate(saga, to=saga.compensate_to or S.EXPIRED, code="reservation_expired", message="The hold expired.")


def saga_keeps_hold(holder: str) -> bool:
    """inventory's extend policy: keep an expired hold while its checkout is charging or in 3-D Secure.

    3-D Secure gets one more reservation TTL past the hold's first expiry, no more: a PaymentIntent in
    ``requires_action`` never expires at Stripe, so a buyer who walks away would otherwise hold the stock
    for ever (the sweep extending it every round)."""
    grace_cutoff = timezone.now() - timedelta(seconds=settings.CARTFLOW_RESERVATION_TTL_SECONDS)
    in_three_d_secure = Q(state=S.REQUIRES_ACTION, expires_at__gt=grace_cutoff)
    return (
        CheckoutSaga.objects.filter(public_id=holder)
        .filter(in_three_d_secure | Q(state=S.PAID) | Q(step="charge", step_status__in=[ABOUT_TO, INDETERMINATE]))
        .exclude(compensate_to__gt="")
        .exists()
    )


def saga_settled_for_intent(intent_id: str, status: str) -> bool:
    """payments' settled check: a succeeded intent whose checkout is confirmed (or fulfilled) needs nothing
    more from :func:`saga_on_intent` (which would take the lease, see the state and do nothing)."""
    return (
        status == "succeeded"
        and CheckoutSaga.objects.filter(
            payment_intent_id=intent_id, state__in=[S.CONFIRMED, S.FULFILLED], compensate_to=""
        ).exists()
    )


def saga_on_intent(intent: IntentResult, source: str) -> None:
    """payments' intent listener: converge the saga on the PaymentIntent, whichever news arrives first."""
    from payments.hooks import NotKnownYet

    checkout_id = intent.metadata.get("checkout_id")
    saga_pk = (
        CheckoutSaga.objects.filter(Q(public_id=checkout_id) | Q(payment_intent_id=intent.intent_id))
        .values_list("pk", flat=True)
        .first()
    )
    if saga_pk is None:
        if CheckoutSaga.objects.filter(order__public_id=intent.order_id or "-").exists():
            return
        raise NotKnownYet(f"no checkout for {intent.intent_id} yet")
    with _driving(saga_pk, wait=2.0) as saga:
        log.info("checkout_intent_update", checkout_id=saga.public_id, intent_status=intent.status, source=source)
        if not saga.payment_intent_id:
            if intent.metadata.get("checkout_id") != saga.public_id or saga.order_id is None:
                raise NotKnownYet(f"checkout {saga.public_id} has not stored its PaymentIntent yet")
            # The process that created it lost the answer (or died): Stripe's intent, re-fetched and
            # carrying this checkout's id, is the order's one PaymentIntent.
            _save(saga, also=_order_payment(saga.order_id, intent), **_link_fields(saga, intent))
        if saga.compensate_to:
            _compensate(saga, to=saga.compensate_to)
        elif saga.is_terminal or saga.state in (S.CONFIRMED,):
            if (
                intent.succeeded
                and saga.state not in (S.CONFIRMED, S.FULFILLED)
                and intent.amount_refunded < intent.amount
            ):
                _compensate_refund(saga, intent)  # money landed on a dead checkout: give it back
        elif saga.state == S.PAID:
            _step_confirm(saga)
        elif saga.state in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION):
            if intent.status in ("requires_payment_method", "requires_confirmation") and not intent.declined:
                return  # nothing happened yet (e.g. payment_intent.created)
            _apply_intent(saga, intent, raise_decline=False)
            if saga.state == S.PAID:
                _step_confirm(saga)


def saga_resume(*, saga_id: int) -> CheckoutSaga:
    """Finish or compensate a saga from what it persisted (recovery, admin "resume")."""
    with _driving(saga_id) as saga:
        if saga.compensate_to:
            _compensate(saga, to=saga.compensate_to)
            return saga
        if saga.state == S.RESERVED:
            try:
                _run_start(saga)
            except (InsufficientStock, InventoryContention):
                return saga  # compensated to failed by the step itself
        if _pending(saga, "charge") or _pending(saga, "create_payment_intent"):
            _settle_in_flight(saga)
        elif saga.state == S.REQUIRES_ACTION:
            _settle_charge(saga)  # a lost webhook: ask Stripe
        if saga.state == S.PAID and not saga.compensate_to:
            _step_confirm(saga)
        if saga.state in (S.AWAITING_PAYMENT, S.REQUIRES_ACTION) and _hold_lapsed(saga):
            _compensate(saga, to=S.EXPIRED, code="reservation_expired", message="The hold expired.")
        return saga


def saga_compensate(*, saga_id: int, to: str = "failed", reason: str = "compensated by an operator") -> CheckoutSaga:
    """Admin "compensate": undo a non-confirmed saga through the same compensation code."""
    with _driving(saga_id) as saga:
        if saga.step == "charge" and saga.step_status in (ABOUT_TO, INDETERMINATE):
            _settle_charge(saga)
        if saga.state in (S.CONFIRMED, S.FULFILLED) or saga.is_terminal:
            raise CheckoutNotCancellable(
                f"The checkout is {saga.state}.", checkoutId=saga.public_id, checkoutStatus=saga.state
            )
        _compensate(saga, to=saga.compensate_to or to, code="operator", message=reason)
        return saga


def sagas_stuck(*, now: datetime | None = None):  # noqa: ANN201 - a QuerySet
    """Non-terminal sagas whose lease lapsed mid-work, or whose hold is past expiry, or left unattended."""
    now = now or timezone.now()
    lapsed = Q(lease_owner__gt="", lease_expires_at__lt=now)
    unattended = Q(lease_owner="") & (
        Q(state__in=[S.RESERVED, S.PAID])
        | Q(compensate_to__gt="")
        | Q(step_status__in=[ABOUT_TO, INDETERMINATE])
        | Q(state__in=[S.AWAITING_PAYMENT, S.REQUIRES_ACTION], expires_at__lt=now)
    )
    # A confirmed saga is the outbox's to finish; it is stuck only if a process died holding its lease.
    return CheckoutSaga.objects.exclude(state__in=CheckoutSaga.TERMINAL).filter(
        lapsed | (unattended & ~Q(state=S.CONFIRMED))
    )


def saga_recover(*, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
    """``recover_sagas``: resume every stuck saga; one failing does not stop the others."""
    counts = {"resumed": 0, "busy": 0, "errors": 0}
    for pk in list(sagas_stuck(now=now).order_by("updated_at").values_list("pk", flat=True)[:limit]):
        try:
            if now is not None:  # a caller looking ahead (tests, an operator) treats leases as lapsed
                CheckoutSaga.objects.filter(pk=pk, lease_expires_at__lt=now).update(
                    lease_owner="", lease_expires_at=None
                )
            saga_resume(saga_id=pk)
            counts["resumed"] += 1
        except CheckoutInProgress:
            counts["busy"] += 1
        except Exception:  # noqa: BLE001 - transient Stripe/Redis trouble: the next run tries again
            log.exception("saga_recover_failed", saga_pk=pk)
            counts["errors"] += 1
    return counts
