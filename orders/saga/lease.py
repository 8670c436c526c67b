"""The saga's lease: a process drives a saga only while it holds it.

The lease (``lease_owner`` / ``lease_expires_at``) is taken with a version-checked UPDATE and renewed by
every save (orders/saga/persistence.py). A crash keeps it, so it lapses after ``CARTFLOW_SAGA_LEASE_SECONDS``
and recovery may take the saga over; a lost version check raises CheckoutInProgress.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

from django.utils import timezone

from orders.errors import CheckoutInProgress
from orders.models import CheckoutSaga
from orders.saga.persistence import save, save_lease_taken


def new_owner() -> str:
    return uuid.uuid4().hex


@contextlib.contextmanager
def driving(saga_id: int, *, wait: float = 0.0, loaded: CheckoutSaga | None = None) -> Iterator[CheckoutSaga]:
    """Hold the lease while the block drives the saga. A crash (BaseException) keeps it, so it lapses."""
    saga = acquire(saga_id, owner=new_owner(), wait=wait, loaded=loaded)
    try:
        yield saga
    except Exception:
        release(saga)
        raise
    release(saga)


def acquire(saga_id: int, *, owner: str, wait: float = 0.0, loaded: CheckoutSaga | None = None) -> CheckoutSaga:
    """Take the saga's lease; wait up to ``wait`` seconds for a live lease to end.

    ``loaded``: the saga (with its order) as the caller just read it; the first try uses it instead of
    reading again. If it is stale, the version check fails and the next try reads afresh."""
    deadline = time.monotonic() + wait
    while True:
        saga = loaded if loaded is not None else CheckoutSaga.objects.select_related("order").get(pk=saga_id)
        loaded = None
        now = timezone.now()
        held = saga.lease_owner and saga.lease_owner != owner and saga.lease_expires_at and saga.lease_expires_at > now
        if not held and save_lease_taken(saga, owner=owner):
            return saga
        if time.monotonic() >= deadline:
            raise CheckoutInProgress(
                "Another request is working on this checkout.", retry_after=1, checkoutId=saga.public_id
            )
        time.sleep(0.05)


def release(saga: CheckoutSaga) -> None:
    if not saga.lease_owner:
        return  # the request's last write released it already
    with contextlib.suppress(CheckoutInProgress):  # someone took over a lapsed lease: theirs now
        save(saga, release_lease=True)
