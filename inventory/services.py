"""Stock reservations and stock adjustments: the one place where stock rows change.

Concurrency without locks held across round trips: every stock change is a conditional UPDATE that
names the version it read (``WHERE id = ? AND version = ? AND on_hand - reserved >= q``). A writer that
lost the race re-reads and retries with exponential backoff and full jitter, bounded by
``CARTFLOW_RESERVE_MAX_ATTEMPTS`` and ``CARTFLOW_RESERVE_MAX_SECONDS``, then gives up with
:class:`InventoryContention` (a clear "busy", never a hang). No row locks (SELECT … FOR UPDATE), no table or
advisory locks.

Each transaction is short and touches rows in one order — the stock row, then the reservation row, and
products in id order — so two writers never wait on each other in a cycle. A stock change and the
reservation row that explains it commit together: a crash leaves both or neither.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from inventory import hooks
from inventory.errors import (
    InsufficientStock,
    InventoryContention,
    ProductNotFound,
    ReservationStateError,
    StockBelowReserved,
)
from inventory.models import Reservation, Stock, StockAdjustment
from inventory.selectors import ReservationInfo, reservations_for_holder

__all__ = [
    "ReservationInfo",
    "ReserveLine",
    "reservation_commit",
    "reservation_extend",
    "reservation_release",
    "reservation_reserve",
    "reservations_for_holder",
    "reservations_release_expired",
    "stock_adjust",
]

log = logging.getLogger(__name__)

HELD = Reservation.Status.HELD
COMMITTED = Reservation.Status.COMMITTED
RELEASED = Reservation.Status.RELEASED
EXPIRED = Reservation.Status.EXPIRED


@dataclass(frozen=True)
class ReserveLine:
    product_id: int
    quantity: int


class _LostRace(Exception):
    """Raised inside a transaction to roll it back when a version check failed."""


def _attempts() -> Iterator[int]:
    """Yield attempt numbers; between attempts sleep with full jitter. Ends when the budget is spent."""
    max_attempts = max(1, settings.CARTFLOW_RESERVE_MAX_ATTEMPTS)
    deadline = time.monotonic() + settings.CARTFLOW_RESERVE_MAX_SECONDS
    base = settings.CARTFLOW_RESERVE_BACKOFF_BASE_SECONDS
    cap = settings.CARTFLOW_RESERVE_BACKOFF_MAX_SECONDS
    for attempt in range(max_attempts):
        yield attempt
        if attempt + 1 >= max_attempts:
            return
        # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): spreads the losers out
        # so they do not collide again in lockstep.
        pause = random.uniform(0, min(cap, base * 2**attempt))
        if time.monotonic() + pause > deadline:
            return
        time.sleep(pause)


# --- reserve ---------------------------------------------------------------------------------------


def reservation_reserve(
    *, lines: Sequence[ReserveLine], holder: str, ttl_seconds: int | None = None, new_holder: bool = False
) -> list[ReservationInfo]:
    """Hold stock for every line, or for none of them, on behalf of ``holder`` (a checkout id).

    Lines of one product are summed first (two lines must not each pass the availability check;
    Medusa #16502). Idempotent per holder: products the holder already holds (HELD or COMMITTED, same
    quantity) are not reserved again, so a saga that re-runs this step after a crash does not
    double-reserve. A RELEASED or EXPIRED row of the holder is revived.

    Raises :class:`InsufficientStock` (nothing held), :class:`InventoryContention` (nothing held), and
    :class:`ReservationStateError` when the holder already holds a different quantity of a product.

    ``new_holder``: the caller just created this holder (a checkout's first reserve), so the lookup of its
    earlier rows is skipped; a row that exists all the same surfaces as a unique violation and is handled
    as a concurrent reserve of the same holder.
    """
    if not holder:
        raise ValueError("holder is required")
    wanted: dict[int, int] = {}
    for line in lines:
        if line.quantity <= 0:
            raise ValueError(f"quantity must be positive, got {line.quantity} for product {line.product_id}")
        wanted[line.product_id] = wanted.get(line.product_id, 0) + line.quantity
    if not wanted:
        return []
    ttl = settings.CARTFLOW_RESERVATION_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    expires_at = timezone.now() + timedelta(seconds=ttl)

    existing = (
        {}
        if new_holder
        else {r.product_id: r for r in Reservation.objects.filter(holder=holder, product_id__in=list(wanted))}
    )
    for product_id, quantity in wanted.items():
        row = existing.get(product_id)
        if row and row.status in (HELD, COMMITTED) and row.quantity != quantity:
            raise ReservationStateError(
                f"holder {holder!r} already has {row.quantity} of product {product_id} {row.status}, asked {quantity}"
            )

    taken: list[int] = []
    try:
        for product_id in sorted(wanted):  # one global order: no two callers wait on each other in a cycle
            row = existing.get(product_id)
            if row and row.status in (HELD, COMMITTED):
                continue
            if _reserve_one(
                product_id=product_id, quantity=wanted[product_id], holder=holder, expires_at=expires_at, revive=row
            ):
                taken.append(product_id)
    except BaseException:
        if taken:
            try:
                _release_rows(holder=holder, status=RELEASED, product_ids=taken)
            except Exception:  # noqa: BLE001 - keep the original error; expiry gives these units back later
                log.exception("undo of a partial reservation failed", extra={"holder": holder})
        raise
    if len(taken) == len(wanted):  # the common case: everything is ours and fresh, no need to read it back
        return [
            ReservationInfo(
                holder=holder, product_id=pid, quantity=wanted[pid], status=HELD.value, expires_at=expires_at
            )
            for pid in sorted(wanted)
        ]
    return reservations_for_holder(holder=holder, product_ids=wanted)


# The hot path in one statement: read the stock row, the version-checked conditional UPDATE, and the INSERT
# of the reservation it pays for. A statement is atomic, so a crash leaves both or neither, and the stock
# row's lock is held only while the statement runs — never across a client round trip (with
# BEGIN/UPDATE/INSERT/COMMIT as separate round trips, every buyer queued on the lock lost its version check
# when it got the row, and throughput at 64 clients fell by an order of magnitude). The read is in the same
# statement as the write it checks: read in one round trip and written in the next, the row changed in
# between for most attempts of a hot rush (a web thread waits for the GIL between the two), so each start
# took several attempts. Now an attempt loses only to a writer that held the row's lock while it ran (the
# UPDATE then re-reads the row, sees the new version and matches nothing). The last SELECT returns the row as
# this statement read it and the reservation's id (NULL when this attempt did not win), so a loss says
# whether stock ran out or the race was lost, without another query.
_RESERVE_SQL = """
WITH cur AS (
    SELECT id, on_hand, reserved, version FROM inventory_stock WHERE product_id = %(product_id)s
), won AS (
    UPDATE inventory_stock s
       SET reserved = s.reserved + %(q)s, version = s.version + 1, updated_at = %(now)s
      FROM cur
     WHERE s.id = cur.id AND s.version = cur.version AND s.on_hand - s.reserved >= %(q)s
 RETURNING s.product_id
), ins AS (
    INSERT INTO inventory_reservation
           (holder, product_id, quantity, status, expires_at, created_at, updated_at, version)
    SELECT %(holder)s, product_id, %(q)s, 'HELD', %(expires_at)s, %(now)s, %(now)s, 0 FROM won
    RETURNING id
)
SELECT (SELECT id FROM ins), on_hand, reserved FROM cur
"""
_STOCK_SQL = "SELECT id, on_hand, reserved, version FROM inventory_stock WHERE product_id = %s"


def _insufficient(product_id: int, available: int, quantity: int) -> InsufficientStock:
    return InsufficientStock(
        f"Only {max(0, available)} of product {product_id} available, {quantity} asked.",
        productId=product_id,
        available=max(0, available),
    )


def _reserve_one(
    *, product_id: int, quantity: int, holder: str, expires_at: datetime, revive: Reservation | None
) -> bool:
    """Reserve one product for the holder. True when this call took the units; False when a concurrent
    call for the same holder already did (so they are not ours to undo)."""
    for _attempt in _attempts():
        now = timezone.now()
        try:
            if revive is None:
                params = {"q": quantity, "now": now, "product_id": product_id}
                params.update(holder=holder, expires_at=expires_at)
                # Inside a caller's transaction, a savepoint keeps a unique violation from poisoning it.
                with transaction.atomic() if connection.in_atomic_block else nullcontext():
                    with connection.cursor() as cursor:
                        cursor.execute(_RESERVE_SQL, params)
                        row = cursor.fetchone()
                if row is None:
                    raise InsufficientStock(f"Product {product_id} has no stock.", productId=product_id, available=0)
                reservation_id, on_hand, reserved = row
                if reservation_id is not None:
                    return True
                if on_hand - reserved < quantity:
                    raise _insufficient(product_id, on_hand - reserved, quantity)
                raise _LostRace
            with connection.cursor() as cursor:
                cursor.execute(_STOCK_SQL, [product_id])
                row = cursor.fetchone()
            if row is None:
                raise InsufficientStock(f"Product {product_id} has no stock.", productId=product_id, available=0)
            stock_id, on_hand, reserved, version = row
            if on_hand - reserved < quantity:
                raise _insufficient(product_id, on_hand - reserved, quantity)
            with transaction.atomic():  # rare path: the holder's released row becomes HELD again
                won = Stock.objects.filter(id=stock_id, version=version, on_hand__gte=F("reserved") + quantity).update(
                    reserved=F("reserved") + quantity, version=F("version") + 1, updated_at=now
                )
                if not won or not Reservation.objects.filter(
                    id=revive.id, version=revive.version, status__in=[RELEASED, EXPIRED]
                ).update(
                    status=HELD, quantity=quantity, expires_at=expires_at, version=F("version") + 1, updated_at=now
                ):
                    raise _LostRace
            return True
        except IntegrityError:
            # The (holder, product) row appeared since we looked: a concurrent call for the same holder.
            if Reservation.objects.filter(holder=holder, product_id=product_id, status__in=[HELD, COMMITTED]).exists():
                return False
            raise
        except _LostRace:
            if revive is not None:
                revive = Reservation.objects.get(id=revive.id)
                if revive.status in (HELD, COMMITTED):
                    return False
    log.warning("reserve gave up after retries", extra={"product_id": product_id, "holder": holder})
    raise InventoryContention(
        f"Too many concurrent checkouts for product {product_id}.", retry_after=1, productId=product_id
    )


# --- release, commit, extend -------------------------------------------------------------------------


def reservation_release(*, holder: str, status: str = RELEASED) -> int:
    """Give back every HELD unit of the holder (HELD → RELEASED, or EXPIRED). Returns units released.

    Safe to call twice (nothing HELD → 0). COMMITTED rows are sold and left alone.
    """
    if status not in (RELEASED, EXPIRED):
        raise ValueError(f"release status must be RELEASED or EXPIRED, got {status!r}")
    return _release_rows(holder=holder, status=status)


def _release_rows(
    *,
    holder: str,
    status: str,
    product_ids: Sequence[int] | None = None,
    expired_before: datetime | None = None,
) -> int:
    """HELD → ``status`` for the holder's rows (optionally only some products, or only those expired by
    ``expired_before``), all in one short transaction; ``reserved`` goes down with each row."""
    for _attempt in _attempts():
        qs = Reservation.objects.filter(holder=holder, status=HELD)
        if product_ids is not None:
            qs = qs.filter(product_id__in=list(product_ids))
        if expired_before is not None:
            qs = qs.filter(expires_at__lte=expired_before)
        rows = list(qs.order_by("product_id").values_list("id", "product_id", "quantity", "version"))
        if not rows:
            return 0
        now = timezone.now()
        try:
            with transaction.atomic():
                for rid, product_id, quantity, version in rows:
                    # Stock row first, then the reservation row: the same order as reserve takes them.
                    # The reservation's version check is what makes the move happen once; a concurrent
                    # releaser of the same holder may decrement first and only then lose on that check,
                    # so the decrement is conditional too (never below zero) and the loser rolls back.
                    if not Stock.objects.filter(product_id=product_id, reserved__gte=quantity).update(
                        reserved=F("reserved") - quantity, version=F("version") + 1, updated_at=now
                    ):
                        raise _LostRace
                    if not Reservation.objects.filter(id=rid, version=version, status=HELD).update(
                        status=status, version=F("version") + 1, updated_at=now
                    ):
                        raise _LostRace
        except _LostRace:
            continue
        return sum(quantity for _rid, _pid, quantity, _v in rows)
    raise InventoryContention(f"Reservation of {holder!r} kept changing.", retry_after=1, productId=rows[0][1])


def reservation_commit(*, holder: str) -> int:
    """Turn the holder's hold into a sale: HELD → COMMITTED, on_hand and reserved down together.

    All rows in one transaction (never half a sale). Already COMMITTED → no-op (returns 0). Raises
    :class:`ReservationStateError` when the holder has no reservation or any row was RELEASED/EXPIRED
    (the saga then re-reserves or refunds).
    """
    for _attempt in _attempts():
        rows = list(
            Reservation.objects.filter(holder=holder)
            .order_by("product_id")
            .values_list("id", "product_id", "quantity", "version", "status")
        )
        if not rows:
            raise ReservationStateError(f"holder {holder!r} has no reservation to commit")
        gone = [(pid, status) for _rid, pid, _q, _v, status in rows if status in (RELEASED, EXPIRED)]
        if gone:
            raise ReservationStateError(f"holder {holder!r} cannot commit: {gone} no longer held")
        held = [r for r in rows if r[4] == HELD]
        if not held:
            return 0
        now = timezone.now()
        try:
            with transaction.atomic():
                for rid, product_id, quantity, version, _status in held:
                    if not Stock.objects.filter(product_id=product_id, reserved__gte=quantity).update(
                        on_hand=F("on_hand") - quantity,
                        reserved=F("reserved") - quantity,
                        version=F("version") + 1,
                        updated_at=now,
                    ):
                        raise _LostRace
                    if not Reservation.objects.filter(id=rid, version=version, status=HELD).update(
                        status=COMMITTED, version=F("version") + 1, updated_at=now
                    ):
                        raise _LostRace
        except _LostRace:
            continue
        return sum(r[2] for r in held)
    raise InventoryContention(f"Reservation of {holder!r} kept changing.", retry_after=1, productId=rows[0][1])


def reservation_extend(*, holder: str, until: datetime) -> int:
    """Push the expiry of the holder's HELD rows out to ``until`` (never earlier). Returns rows extended."""
    return Reservation.objects.filter(holder=holder, status=HELD, expires_at__lt=until).update(
        expires_at=until, version=F("version") + 1, updated_at=timezone.now()
    )


# --- expiry ------------------------------------------------------------------------------------------


def reservations_release_expired(*, now: datetime | None = None, batch_size: int = 500) -> list[str]:
    """Release every HELD reservation past its expiry; returns the holders expired by this call.

    Per holder: when an extend policy (inventory.hooks) says the checkout is charging right now, the hold
    is extended by the reservation TTL instead (Saleor #15246). Otherwise its expired rows become EXPIRED
    and the expired listeners are told, once, after the commit. Several workers may run this at once:
    the version-checked move happens for one of them only, and only that one notifies.
    """
    now = now or timezone.now()
    ttl = timedelta(seconds=settings.CARTFLOW_RESERVATION_TTL_SECONDS)
    expired: list[str] = []
    after = ""
    while True:
        holders = list(
            Reservation.objects.filter(status=HELD, expires_at__lte=now, holder__gt=after)
            .order_by("holder")
            .values_list("holder", flat=True)
            .distinct()[:batch_size]
        )
        if not holders:
            break
        after = holders[-1]  # keyset pagination: terminates even if a holder keeps failing
        for holder in holders:
            if hooks.should_extend(holder):
                reservation_extend(holder=holder, until=max(now, timezone.now()) + ttl)
                log.info("expired hold extended by policy", extra={"holder": holder})
                continue
            try:
                released = _release_rows(holder=holder, status=EXPIRED, expired_before=now)
            except InventoryContention:
                log.warning("could not expire hold this round", extra={"holder": holder})
                continue
            if released:
                expired.append(holder)
                hooks.notify_expired(holder)
        if len(holders) < batch_size:
            break
    return expired


# --- stock adjustments -------------------------------------------------------------------------------


def stock_adjust(*, product_id: int, delta: int, reason: str, user=None, reference: str = "") -> int:  # noqa: ANN001 - a User or None
    """Change ``on_hand`` by ``delta`` (restock > 0, write-off < 0) with an audit row; returns the new on_hand.

    Version-checked with the same bounded retry as reserve. Refuses (:class:`StockBelowReserved`) to go
    below what checkouts hold.

    ``reference`` names what the adjustment is for (e.g. ``order:<id>:cancel``): an adjustment with a
    reference is applied once per product, whoever asks and however often. The unique index on
    (reference, product) decides: a second writer's audit row loses on it, which undoes its stock UPDATE in
    the same transaction, and it returns the current on_hand unchanged.
    """
    if delta == 0:
        raise ValueError("delta must not be zero")
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required")
    who = user if user is not None and getattr(user, "pk", None) is not None else None
    for _attempt in _attempts():
        # Looked up before the stock row is read, so the on_hand returned for a repeat is never older than it.
        done = bool(reference) and StockAdjustment.objects.filter(product_id=product_id, reference=reference).exists()
        row = Stock.objects.filter(product_id=product_id).values_list("id", "on_hand", "reserved", "version").first()
        if row is None:
            raise ProductNotFound(f"Product {product_id} has no stock row.", productId=product_id)
        stock_id, on_hand, reserved, version = row
        if done:
            return on_hand
        new_on_hand = on_hand + delta
        if new_on_hand < reserved:
            raise StockBelowReserved(
                f"On hand would be {new_on_hand}, but checkouts hold {reserved} units of product {product_id}.",
                productId=product_id,
                onHand=on_hand,
                reserved=reserved,
            )
        try:
            with transaction.atomic():
                won = Stock.objects.filter(id=stock_id, version=version).update(
                    on_hand=new_on_hand, version=F("version") + 1, updated_at=timezone.now()
                )
                if won:
                    StockAdjustment.objects.create(
                        product_id=product_id,
                        delta=delta,
                        reason=reason[:200],
                        who=who,
                        on_hand_after=new_on_hand,
                        reference=reference,
                    )
                    return new_on_hand
        except IntegrityError:
            if not reference:
                raise
            # Another writer applied this reference first; our UPDATE was rolled back with the row.
            return Stock.objects.values_list("on_hand", flat=True).get(id=stock_id)
    raise InventoryContention(
        f"Stock of product {product_id} kept changing; try again.", retry_after=1, productId=product_id
    )
